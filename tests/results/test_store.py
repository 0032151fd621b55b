"""Run folders: a finished run is never overwritten, a failed one is marked, a finished one is found again."""

from pathlib import Path

import pytest

from preempt.commands.results import main
from preempt.files import write_json_atomically
from preempt.results.record import build_results
from preempt.results.store import FinishedRunError, mark_failed_run, refuse_finished_output_dir

CONFIG = {
    "dataset": {"_target_": "preempt.datasets.digits.digits"},
    "defense": {"_target_": "preempt.defenses.fast_preemption.FastPreemption"},
    "receiver_defense": {"_target_": "preempt.parts.Identity"},
    "attack": {"_target_": "preempt.attacks.autoattack.AutoAttack"},
    "threat": {"eps": 0.2, "norm": "Linf", "oblivious": False},
}


def test_failed_runs_are_marked_and_the_table_says_what_it_leaves_out(tmp_path: Path, capsys) -> None:
    finished, failed, running = (tmp_path / "runs" / name for name in ("finished", "failed", "running"))
    for folder in (finished, failed, running):
        (folder / ".hydra").mkdir(parents=True)
    write_json_atomically(build_results(CONFIG, {"test/robust_acc": 0.5}, 10, 1.0), finished / "results.json")
    assert mark_failed_run(finished, "ValueError: late") is None, "a finished run is never touched"
    marked = mark_failed_run(failed, "ConfigError: dataset.root must be set")
    assert marked == tmp_path / "runs" / "failed_failed" and not failed.exists()
    assert (marked / "FAILED").read_text() == "ConfigError: dataset.root must be set\n"
    main([str(tmp_path / "runs")])
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3  # header, rule, the one finished run
    assert "1 failed run folder(s)" in captured.err and "1 without results.json" in captured.err


def test_a_finished_run_is_never_overwritten(tmp_path: Path) -> None:
    refuse_finished_output_dir(tmp_path / "new")  # absent or empty folders are fine
    write_json_atomically({"a": 1}, tmp_path / "sweep" / "0" / "results.json")
    with pytest.raises(FinishedRunError, match=r"sweep/0/results\.json"):
        refuse_finished_output_dir(tmp_path / "sweep")
