"""The DiffPure speed table: every solver and gradient mode runs and gets a time."""

from __future__ import annotations

from pathlib import Path

from conftest import TEST_SCORE_MODEL

from preempt.commands.diffpure_speed import MODES, main


def test_the_table_times_every_mode(zoo_dir: Path, digits_score_model, capsys) -> None:
    recipe = [override.removeprefix("score_model.") for override in TEST_SCORE_MODEL]
    main(["--batch", "2", "--t-star", "0.005", "--repeats", "1", "--cache-dir", str(zoo_dir), "--recipe", *recipe])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "s/image" not in line]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == list(MODES)
    assert all(float(row.split(" | ")[1]) > 0 for row in rows)
