"""The table files: each loads, and a bad file is refused naming the file and the key."""

from pathlib import Path

import pytest
import yaml

from preempt.reproduce.tables import TABLES_DIR, cell_overrides, load_table, load_tables

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
    "fast_preemption_imagenet_lite",
}


def test_every_paper_table_has_a_file_that_loads() -> None:
    tables = load_tables()
    assert {table.name for table in tables} >= EXPECTED_TABLES
    for table in tables:
        assert (TABLES_DIR.parent.parent / "conf" / "experiment" / f"{table.preset}.yaml").is_file(), table.name
        assert any(row.paper for row in table.rows) or "figure" in table.name, f"{table.name}: no published number"


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
