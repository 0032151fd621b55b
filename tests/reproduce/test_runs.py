"""A table's runs: every cell composes at every scale as src/main.py would compose it, found by its fingerprint."""

import json
from pathlib import Path

import pytest
from hydra import compose

from preempt.config import composer
from preempt.reproduce.runs import FIRST_USE_TRAINERS, finished_runs, missing_seeds, multirun_arguments, table_cells
from preempt.reproduce.tables import SCALES, cell_overrides, load_table, load_tables

TINY = Path(__file__).parent / "tables" / "tiny.yaml"


@pytest.mark.parametrize("scale", SCALES)
def test_every_cell_of_every_table_composes(scale: str) -> None:
    """Every scale validates exactly as the runs will, each row with the runs it takes; offline, the paper scale
    may only lack its weight files."""
    tables = [table for table in load_tables() if scale in table.scales]
    assert tables
    with composer():
        for table in tables:
            cells, problems = table_cells(table, scale)
            if scale != "paper":
                assert not problems, table.name
                assert len(cells) == sum(len(table.runs_of(row)) for row in table.rows_at(scale))
                continue
            # Offline, only the weight files may be missing: every setting is valid and every model takes the
            # dataset's images (a digits model left on CIFAR-10 would stop the run on the GPU machine).
            missing = ("is missing: place the RobustBench checkpoint there", "checkpoint")
            assert all(any(words in message for words in missing) for message in problems), (table.name, problems)
            for row in table.rows_at(scale):
                for run in table.runs_of(row):
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
    score_model = "preempt.zoo.digits_score_model.load_or_train_digits_score_model"
    for cell in cells:
        targets = [json.loads(node)["_target_"] for node in cell.first_use]
        assert all(target.startswith(FIRST_USE_TRAINERS) for target in targets)
        assert targets.count(score_model) == (cell.run == "diffpure"), cell.folder
        assert targets.count("preempt.zoo.digits_classifiers.digits_model") >= 2, cell.folder  # backbone, victim


def test_only_the_missing_seeds_run_in_a_fresh_folder_of_their_own(tmp_path: Path) -> None:
    with composer():
        (cell, *_), _ = table_cells(load_table(TINY), "quick")
    first, second = cell.fingerprints.values()
    finished = {first: tmp_path / "results.json"}
    assert missing_seeds(cell, finished) == [list(cell.fingerprints)[1]] and second not in finished
    arguments = multirun_arguments(cell, [1], tmp_path)
    assert arguments[0] == "-m" and "seed=1" in arguments and "skip_finished=true" in arguments
    assert any(argument.startswith(f"hydra.sweep.dir={tmp_path / cell.folder}") for argument in arguments)


def test_finished_runs_are_found_by_fingerprint_the_newest_when_one_ran_twice(tmp_path: Path) -> None:
    for folder, stamp in (("old", "2026-01-01T00:00:00"), ("new", "2026-02-01T00:00:00")):
        (tmp_path / folder).mkdir()
        record = {"run": {"fingerprint": "abc", "finished_at": stamp}}
        (tmp_path / folder / "results.json").write_text(json.dumps(record))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{not json")
    assert finished_runs(tmp_path) == {"abc": tmp_path / "new" / "results.json"}
