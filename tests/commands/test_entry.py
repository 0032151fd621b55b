"""What every command shares: refusals as one line, failed run folders marked, finished ones never overwritten."""

from pathlib import Path

import pytest
from helpers.locks import folder_held_by_another_process
from hydra.errors import InstantiationException

from preempt.commands.entry import KeepFinishedRuns, marked_if_failed, one_line_refusals, task_overrides
from preempt.parts import ConfigError


def test_a_refusal_ends_the_command_with_one_error_line() -> None:
    with pytest.raises(SystemExit, match=r"^error: threat: fix it$"), one_line_refusals():
        raise ConfigError("threat: fix it")
    wrapped = InstantiationException("Error in call to target")
    wrapped.__cause__ = FileNotFoundError("weights of X are not at /models/x.pt")
    with pytest.raises(SystemExit, match=r"^error: weights of X are not at /models/x\.pt$"), one_line_refusals():
        raise wrapped


def test_any_other_error_keeps_its_traceback() -> None:
    with pytest.raises(ZeroDivisionError), one_line_refusals():
        raise ZeroDivisionError


def test_a_failed_run_folder_is_marked_and_a_clean_exit_is_not(tmp_path: Path) -> None:
    failing, clean = tmp_path / "failing", tmp_path / "clean"
    failing.mkdir(), clean.mkdir()
    with pytest.raises(RuntimeError), marked_if_failed(failing):
        raise RuntimeError("broke")
    assert (tmp_path / "failing_failed" / "FAILED").read_text() == "RuntimeError: broke\n"
    with pytest.raises(SystemExit), marked_if_failed(clean):
        raise SystemExit(0)
    assert clean.is_dir() and not (clean / "FAILED").exists()


def test_a_finished_run_folder_is_refused_before_hydra_writes_into_it(tmp_path: Path) -> None:
    KeepFinishedRuns.refuse(tmp_path / "new")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "results.json").write_text("{}")
    with pytest.raises(SystemExit, match="finished run"):
        KeepFinishedRuns.refuse(tmp_path / "done")


def test_outside_a_hydra_run_there_are_no_overrides() -> None:
    assert task_overrides() == []


def test_a_run_folder_in_use_or_unwritable_is_refused_before_hydra_writes_there(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    with folder_held_by_another_process(folder, "src/main.py") as holder, pytest.raises(SystemExit) as refused:
        KeepFinishedRuns.refuse(folder)
    assert str(refused.value).startswith(f"error: {folder} is in use: process {holder} (src/main.py)")
    KeepFinishedRuns.refuse(folder)  # free again once its holder is gone
    with pytest.raises(SystemExit, match=r"run folder /sys/preempt_run cannot be written .*set hydra\.run\.dir"):
        KeepFinishedRuns.refuse(Path("/sys/preempt_run"))
