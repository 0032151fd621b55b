"""The `preempt` console script: it lists its commands and hands the rest of the line to the one named."""

import pytest

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
