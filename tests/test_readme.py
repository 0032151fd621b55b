"""Every `src/main.py` command the README shows composes and passes validation, as written.

Sweeps (`-m`, `a,b,c`) are checked at every value of each swept key; `$common` is the variable its code block
sets. Running them all is the README's job (their figures are measured); this keeps them from going stale.
"""

from __future__ import annotations

import itertools
import re
import shlex

import pytest
from conftest import ROOT

from preempt.validation import ConfigError, validate_config

README = (ROOT / "README.md").read_text()
HYDRA_ONLY = ("hydra.", "-m")


def readme_commands() -> list[tuple[str, list[str]]]:
    """(the line as written, its overrides) for every `.venv/bin/python src/main.py` line in a bash block."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        block = block.replace("\\\n", " ")
        variables = dict(re.findall(r'^(\w+)="([^"]*)"$', block, flags=re.M))
        for line in block.splitlines():
            if not line.startswith(".venv/bin/python src/main.py"):
                continue
            written = line.split(" # ")[0].split("  #")[0].strip()
            for name, value in variables.items():
                written = written.replace(f"${name}", value)
            words = shlex.split(written)[2:]
            commands.append((line.strip(), [word for word in words if not word.startswith(HYDRA_ONLY)]))
    return commands


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """Every job of a Hydra sweep written as key=a,b,c (lists in [...] are values, not sweeps)."""
    choices = []
    for override in overrides:
        key, _, value = override.partition("=")
        values = value.split(",") if "," in value and not value.startswith("[") else [value]
        choices.append([f"{key}={item}" for item in values])
    return [list(job) for job in itertools.product(*choices)]


COMMANDS = readme_commands()


def test_the_readme_shows_many_commands() -> None:
    assert len(COMMANDS) >= 25


@pytest.mark.parametrize(("line", "overrides"), COMMANDS, ids=[line[:60] for line, _ in COMMANDS])
def test_every_readme_command_composes_and_validates(line: str, overrides: list[str], compose_config) -> None:
    """A command the README marks `# needs <file>` must be refused naming that file (it is not shipped)."""
    needed = re.search(r"#\s*needs (\S+)", line)
    for job in expand_sweep(overrides):
        if needed is None:
            validate_config(compose_config(*job))
            continue
        with pytest.raises(ConfigError, match=re.escape(needed.group(1))):
            validate_config(compose_config(*job))
