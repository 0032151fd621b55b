"""The `preempt` console script: it lists its commands and hands the rest of the line to the one named."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.manifests import protected_folder

from preempt.commands import preempt


def test_without_a_command_it_lists_them_and_help_is_no_error(capsys) -> None:
    assert preempt.main([]) == 2 and preempt.main(["--help"]) == 0
    listed = capsys.readouterr().err
    assert "protect" in listed and "verify" in listed and listed.startswith("usage: preempt <command>")
    assert preempt.main(["train"]) == 2


def test_each_command_gets_the_rest_of_the_line(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr("preempt.commands.verify.main", lambda rest: calls.append(("verify", rest)) or 0)
    monkeypatch.setattr("preempt.commands.protect.main", lambda rest: calls.append(("protect", rest)) or 1)
    assert preempt.main(["verify", "out", "--input", "in"]) == 0
    assert preempt.main(["protect", "in", "out", "threat.eps=4/255"]) == 1
    assert calls == [("verify", ["out", "--input", "in"]), ("protect", ["in", "out", "threat.eps=4/255"])]


def test_python_dash_m_preempt_is_the_same_script() -> None:
    with pytest.raises(SystemExit):
        import preempt.__main__  # noqa: F401  (runs main, which exits)


def imported_modules(arguments: list[str]) -> tuple[int, set[str]]:
    """The console script's exit status with these arguments and every module it imported (Python's -X importtime
    report, so the real script runs as users run it)."""
    script = Path(sys.executable).parent / "preempt"
    done = subprocess.run([str(script), *arguments], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})  # fmt: skip
    report = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    return done.returncode, set(report)


@pytest.mark.parametrize(
    ("arguments", "status"),
    [
        (["--help"], 0),
        (["verify", "--help"], 0),
        (["protect", "--help"], 0),
        (["protect", "photos/"], 2),  # no OUTPUT_DIR
        (["verify", "{out}"], 0),
        (["verify", "{out}", "--eps", "8"], 2),
    ],
)
def test_help_verify_and_argument_refusals_answer_without_torch(tmp_path: Path, arguments, status) -> None:
    _, target = protected_folder(tmp_path, [3])
    code, modules = imported_modules([argument.format(out=target) for argument in arguments])
    assert code == status
    assert "preempt.commands.preempt" in modules  # the report covers the script's own imports
    assert not {name for name in modules if name.split(".")[0] in ("torch", "hydra")}
