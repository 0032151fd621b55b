"""The table files: each loads, every cell composes at both scales, and bad files are refused naming the key."""

import json
from pathlib import Path

import pytest
import yaml
from hydra import compose

from preempt.reproduce.runs import FIRST_USE_TRAINERS, composer, table_cells
from preempt.reproduce.tables import SCALES, TABLES_DIR, cell_overrides, load_table, load_tables

TINY = Path(__file__).parent / "tables" / "tiny.yaml"
# Every table and figure of issue 13 that comes from runs (Figures 4 and 5 are pictures: preempt.reproduce.pictures).
EXPECTED_TABLES = {
    "fast_preemption_table1",
    "fast_preemption_table4",
    "fast_preemption_table5",
    "fast_preemption_table6",
    "fast_preemption_table7",
    "fast_preemption_table8",
    "fast_preemption_figure8",
    "fast_preemption_figure9",
    "preprocessing_table1",
    "preprocessing_table3",
    "preprocessing_figure3",
}


def test_every_paper_table_has_a_file_that_loads() -> None:
    tables = load_tables()
    assert {table.name for table in tables} >= EXPECTED_TABLES
    for table in tables:
        assert (TABLES_DIR.parent.parent / "conf" / "experiment" / f"{table.preset}.yaml").is_file(), table.name
        assert any(row.paper for row in table.rows) or "figure" in table.name, f"{table.name}: no published number"


@pytest.mark.parametrize("scale", SCALES)
def test_every_cell_of_every_table_composes(scale: str) -> None:
    """The paper scale composes offline (its checkpoints are checked when it runs); the quick scale validates too,
    exactly as the runs will."""
    tables = [table for table in load_tables() if scale in table.scales]
    with composer():
        for table in tables:
            if scale == "quick":
                cells, problems = table_cells(table, scale)
                assert not problems, table.name
                assert len(cells) == len(table.rows_at(scale)) * len(table.used_runs())
                continue
            for row in table.rows_at(scale):
                for run in table.used_runs():
                    cfg = compose(config_name="main", overrides=cell_overrides(table, row, run, scale))
                    assert cfg.dataset._target_.rsplit(".", 1)[-1] != "digits", (table.name, row.key, run)


def test_the_quick_scale_gives_each_seed_its_own_slice() -> None:
    table = load_table(TINY)
    with composer():
        cells, _ = table_cells(table, "quick")
        offsets = []
        for seed in (0, 1):
            overrides = [*cell_overrides(table, table.rows[0], "pgd", "quick"), f"seed={seed}"]
            cfg = compose(config_name="main", overrides=overrides)
            offsets.append((cfg.dataset.offset, cfg.dataset.n_samples))
    assert offsets == [(0, 8), (8, 8)]
    assert len({key for cell in cells for key in cell.fingerprints.values()}) == 2 * 2 * 2


def test_each_cell_names_the_models_its_runs_train_on_first_use() -> None:
    """The driver trains these before the tables start: the digits models of every role, and the digits score model
    only where DiffPure purifies (Table V's DiffPure column)."""
    with composer():
        cells, _ = table_cells(load_tables(["fast_preemption_table5"])[0], "quick")
    for cell in cells:
        targets = [json.loads(node)["_target_"] for node in cell.first_use]
        assert set(targets) <= set(FIRST_USE_TRAINERS)
        assert targets.count(FIRST_USE_TRAINERS[1]) == (cell.run == "diffpure"), cell.folder
        assert targets.count(FIRST_USE_TRAINERS[0]) >= 2, cell.folder  # the backbone and the victim


def broken(tmp_path: Path, change) -> Path:
    data = yaml.safe_load(TINY.read_text())
    change(data)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda data: data["columns"][0].update(run="autoattack"), "column 'time' draws from run 'autoattack'"),
        (lambda data: data["rows"][1]["paper"].update(robust=1), "row 'ours' names column 'robust'"),
        (lambda data: data["rows"][1]["claim"]["holds"].append({"greater": ["ours.pgd", "x.pgd"]}), "'x.pgd'"),
        (lambda data: data["rows"][1]["claim"]["holds"].append({}), "a condition is one of"),
        (lambda data: data["rows"][0].update(overrides=["attack=fgsm"]), "both set attack"),
        (lambda data: data["rows"][0].update(overrides=["defense=none,a5"]), "would sweep"),
        (lambda data: data.update(seeds={"quick": [], "paper": [0]}), "seeds.quick is empty"),
        (lambda data: data.update(colour="red"), "colour"),
    ],
)
def test_a_bad_table_file_is_refused_naming_the_file_and_the_key(tmp_path: Path, change, message: str) -> None:
    path = broken(tmp_path, change)
    with pytest.raises(ValueError, match=str(path)) as error:
        load_table(path)
    assert message in str(error.value)


def test_an_unknown_table_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="fast_preemption_table4"):
        load_tables(["table_ix"])


def test_a_run_can_name_what_the_row_sets(tmp_path: Path) -> None:
    """Table VII attacks each row's own backbone: `victim={backbone}` is what the row sets backbone to."""
    table = next(table for table in load_tables() if table.name == "fast_preemption_table7")
    row = table.rows[0]
    assert "victim=digits_cnn_at" in cell_overrides(table, row, "white_pgd", "quick")
    assert "victim=Peng2023Robust" in cell_overrides(table, row, "white_pgd", "paper")
