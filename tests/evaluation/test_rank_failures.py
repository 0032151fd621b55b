"""In a multi-process run, the process that fails first names the cause for the others."""

from pathlib import Path
from types import SimpleNamespace

from preempt.evaluation.rank_failures import RankFailureReport


def test_the_first_failing_rank_is_recorded_and_the_others_read_it(tmp_path: Path) -> None:
    report = RankFailureReport(tmp_path / ".rank_failures")
    assert report.first_failure(other_than=0) is None
    report.on_exception(SimpleNamespace(world_size=2, global_rank=1), None, RuntimeError("injected"))
    assert report.first_failure(other_than=0) == "rank 1 failed: RuntimeError: injected"
    assert report.first_failure(other_than=1) is None, "a rank's own record is not another's failure"
    report.on_exception(SimpleNamespace(world_size=2, global_rank=0), None, ConnectionError("closed by peer"))
    assert not (tmp_path / ".rank_failures" / "rank_0.txt").exists(), "who failed second records nothing"


def test_a_single_process_run_records_nothing(tmp_path: Path) -> None:
    report = RankFailureReport(tmp_path / "failures")
    report.on_exception(SimpleNamespace(world_size=1, global_rank=0), None, RuntimeError("x"))
    assert not (tmp_path / "failures").exists()
