"""The table files: each loads, and a bad file is refused naming the file and the key."""

from pathlib import Path

import pytest
import yaml

from preempt.reproduce.tables import TABLES_DIR, cell_overrides, load_table, load_tables

TINY = Path(__file__).parent / "tables" / "tiny.yaml"


# Every table and figure of both papers that comes from runs (Figures 4 and 5 are pictures: preempt.reproduce.pictures).
EXPECTED_TABLES = {
    "fast_preemption_table1",
    "fast_preemption_table4",
    "fast_preemption_table5",
    "fast_preemption_table6",
    "fast_preemption_table7",
    "fast_preemption_table8",
    "fast_preemption_figure6",
    "fast_preemption_figure8",
    "fast_preemption_figure9",
    "preprocessing_table1",
    "preprocessing_table2",
    "preprocessing_table3",
    "preprocessing_eot_sizes",
    "preprocessing_figure3",
    "fast_preemption_imagenet_lite",
}


def test_every_paper_table_has_a_file_that_loads() -> None:
    tables = load_tables()
    assert {table.name for table in tables} >= EXPECTED_TABLES
    for table in tables:
        assert (TABLES_DIR.parent.parent / "conf" / "experiment" / f"{table.preset}.yaml").is_file(), table.name
        published = any(row.paper for row in table.rows) or "no numbers published" in table.source
        assert published or "figure" in table.name, f"{table.name}: no published number"


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
        (lambda data: data["rows"][0].update(runs=["autoattack"]), "row 'none' takes run 'autoattack'"),
        (lambda data: data["rows"][0].update(overrides=["defense"]), "row 'none': 'defense' is not a Hydra override"),
        (lambda data: data["rows"][0].update(overrides={"imagenet_lite": ["defense"]}), "row 'none': 'defense'"),
    ],
)
def test_a_bad_table_file_is_refused_naming_the_file_and_the_key(tmp_path: Path, change, message: str) -> None:
    path = broken(tmp_path, change)
    with pytest.raises(ValueError, match=str(path)) as error:
        load_table(path)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda data: data["rows"][0]["overrides"].append("classifier._target_=shutil.copy"),
            "row 'none': 'classifier._target_=shutil.copy' sets a _target_",
        ),
        (lambda data: data["rows"][0]["overrides"].append("+classifier.wrapped={_target_:os.getcwd}"), "_target_"),
        (
            lambda data: data["overrides"]["quick"].append("hydra.searchpath=[file:///tmp/configs]"),
            "the table's overrides: 'hydra.searchpath=[file:///tmp/configs]' sets Hydra's own config",
        ),
        (
            lambda data: data["runs"]["pgd"].append("+hydra.job.env_set.PREEMPT_TRUSTED_MODULES=shutil"),
            "run 'pgd': '+hydra.job.env_set.PREEMPT_TRUSTED_MODULES=shutil' sets Hydra's own config",
        ),
        (lambda data: data["rows"][1]["overrides"].append("+paths@hydra.callbacks=default"), "Hydra's own config"),
        (
            lambda data: data["rows"][1].update(overrides=["defense=../../../tmp/evil"]),
            "row 'ours': 'defense=../../../tmp/evil': an option of defense is a file under conf/defense/",
        ),
        (
            lambda data: data.update(preset="/tmp/evil"),
            "preset: 'experiment=/tmp/evil': an option of experiment is a file under conf/experiment/",
        ),
    ],
)
def test_a_table_cannot_name_code_hydra_settings_or_configs_from_elsewhere(tmp_path: Path, change, message) -> None:
    """A shared table file picks the project's options: it cannot make a run build or load anything else."""
    with pytest.raises(ValueError, match=str(broken(tmp_path, change))) as error:
        load_tables(folder=tmp_path)
    assert message in str(error.value)


def test_a_run_that_takes_a_row_value_is_checked_with_it(tmp_path: Path) -> None:
    def change(data: dict) -> None:
        data["rows"][0]["overrides"].append("task_name=../../../tmp/evil")
        data["runs"]["pgd"].append("classifier={task_name}")

    with pytest.raises(ValueError, match=r"row 'none', run 'pgd' at scale quick: 'classifier=\.\./\.\./\.\./tmp/evil'"):
        load_table(broken(tmp_path, change))


def test_an_unknown_table_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="fast_preemption_table4"):
        load_tables(["table_ix"])


def test_a_run_can_name_what_the_row_sets(tmp_path: Path) -> None:
    """Table VII attacks each row's own backbone: `victim={backbone}` is what the row sets backbone to."""
    table = next(table for table in load_tables() if table.name == "fast_preemption_table7")
    row = table.rows[0]
    assert "victim=digits_cnn_at" in cell_overrides(table, row, "white_pgd", "quick")
    assert "victim=Peng2023Robust" in cell_overrides(table, row, "white_pgd", "paper")


def test_a_folder_without_table_files_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no table files \(\*\.yaml\) under .*--tables-dir"):
        load_tables(folder=tmp_path)


def test_the_real_photo_scale_is_opt_in_and_has_the_second_paper_and_fast_preemption() -> None:
    """A table runs at quick and paper unless it names its scales; imagenet_lite has the second paper's three
    tables and Fast Preemption's own, and every one of them says in its notes what that scale changes."""
    tables = {table.name: table for table in load_tables()}
    at_lite = {name for name, table in tables.items() if "imagenet_lite" in table.scales}
    assert at_lite == {"preprocessing_table1", "preprocessing_table3", "preprocessing_figure3",
                       "fast_preemption_imagenet_lite"}  # fmt: skip
    assert tables["fast_preemption_table4"].scales == ["quick", "paper"]
    for name in at_lite:
        assert tables[name].notes.get("imagenet_lite"), name
        assert tables[name].seeds["imagenet_lite"] == [0, 1, 2], name


def test_bi_level_runs_the_papers_setting_and_its_authors_algorithm_only_as_a_declared_extra() -> None:
    """The Fast Preemption paper's Bi-Level is its Table III setting (defense=bilevel_fp); a row running the authors'
    algorithm (defense=bilevel) says it is not the paper's and carries no published number."""
    for table in load_tables():
        for row in table.rows:
            for scale in table.scales:
                overrides = [*table.overrides.at(scale), *row.overrides.at(scale)]
                for run in table.runs_of(row):
                    overrides += table.runs[run].at(scale)
                if "defense=bilevel" in overrides:
                    assert "not in the paper" in row.name and not row.paper, (table.name, row.key)


def test_the_second_papers_tables_use_its_budget_and_its_authors_baseline_settings() -> None:
    """Its budget is the RMS of δ at most 0.05 (the authors' check) in every cell at every scale, and Rand, TV, BdR
    and PD run the settings of the authors' code in the rows that carry its numbers."""
    from hydra import compose

    from preempt.config import composer

    baselines = {"random_resize_pad", "total_variation", "bit_depth", "pixel_deflection"}
    with composer():
        for table in load_tables():
            if not table.name.startswith("preprocessing"):
                continue
            for scale in table.scales:
                row = table.rows_at(scale)[0]
                cfg = compose(config_name="main", overrides=cell_overrides(table, row, table.runs_of(row)[0], scale))
                assert (cfg.threat.norm, cfg.threat.eps) == ("RMS", 0.05), (table.name, scale)
                for row in table.rows_at(scale):
                    chosen = {item.partition("=")[2] for item in row.overrides.at(scale)}
                    assert not (row.paper and chosen & baselines), (table.name, row.key)
