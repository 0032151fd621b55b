"""Several multiruns of src/main.py in one process: each reports its exit status, and a failure stops the rest."""

import json
from pathlib import Path

from preempt.commands import reproduce_batch
from preempt.reproduce.runs import DONE


def run_batch(tmp_path: Path, monkeypatch, statuses: list, *flags: str) -> tuple[int, list[list[str]]]:
    """The batch over one command per status, with the evaluation standing in: each call exits with its status."""
    calls = []

    def evaluation() -> None:
        calls.append(list(reproduce_batch.sys.argv[1:]))
        status = statuses[len(calls) - 1]
        if status is not None:
            raise SystemExit(status)

    monkeypatch.setattr(reproduce_batch, "evaluate_main", evaluation)
    commands = [{"name": f"cell{i}", "arguments": ["-m", f"seed={i}"]} for i in range(len(statuses))]
    (tmp_path / "commands.json").write_text(json.dumps(commands))
    return reproduce_batch.main([str(tmp_path / "commands.json"), *flags]), calls


def test_each_multirun_reports_its_status(tmp_path: Path, monkeypatch, capsys) -> None:
    status, calls = run_batch(tmp_path, monkeypatch, [None, 0])
    assert status == 0 and calls == [["-m", "seed=0"], ["-m", "seed=1"]]
    assert capsys.readouterr().out.splitlines() == [f"{DONE} cell0: 0", f"{DONE} cell1: 0"]


def test_a_failure_stops_the_rest_unless_told_to_keep_going_and_a_signal_always_does(tmp_path, monkeypatch, capsys):
    assert run_batch(tmp_path, monkeypatch, ["error: refused", 0])[1] == [["-m", "seed=0"]]
    assert "error: refused" in capsys.readouterr().err  # the refusal's one line is kept in the log
    status, calls = run_batch(tmp_path, monkeypatch, [1, 0], "--keep-going")
    assert status == 1 and len(calls) == 2
    assert len(run_batch(tmp_path, monkeypatch, [143, 0], "--keep-going")[1]) == 1  # SIGTERM: someone is stopping it
