"""Every `src/main.py` command README.md and docs/*.md show composes and passes validation, as written, and every
`python -m` module they name exists.

Sweeps (`-m`, `a,b,c`) are checked at every value of each swept key; `$common` is the variable its code block
sets. Running them all is the documents' job (their figures are measured); this keeps them from going stale.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import shlex

import pytest
from conftest import ROOT

from preempt.config import group_options
from preempt.parts import ConfigError
from preempt.validation import validate_config

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TEXT = "\n".join(path.read_text() for path in DOCUMENTS)
HYDRA_ONLY = ("hydra.", "-m")


def readme_commands() -> list[tuple[str, list[str]]]:
    """(the line as written, its overrides) for every `.venv/bin/python src/main.py` line in a bash block."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", TEXT, flags=re.S):
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


def test_the_documents_show_many_commands() -> None:
    assert len(COMMANDS) >= 25


def test_the_front_page_is_short_and_every_page_it_links_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for target in re.findall(r"\]\(((?:docs/)?[\w./-]+\.(?:md|png))(?:#[\w-]+)?\)", TEXT):
        assert (ROOT / target).is_file() or (ROOT / "docs" / target).is_file(), target


def test_every_module_a_document_runs_with_python_dash_m_exists() -> None:
    modules = set(re.findall(r"python -m (preempt[\w.]*)", TEXT))
    assert "preempt.commands.reproduce" in modules
    for module in modules:
        assert importlib.util.find_spec(module) is not None, module


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


# Each group's page, where every option of the group is named (in backticks): a new option comes with its line of docs.
PAGES = {
    "dataset": ["evaluation.md"],
    "model": ["evaluation.md"],
    "defense": ["preemptive_defenses.md", "receiver_defenses.md"],  # every transform also serves the sender
    "receiver_defense": ["receiver_defenses.md"],
    "score_model": ["receiver_defenses.md"],
    "reversion": ["reversions.md"],
    "attack": ["attacks.md"],
}


@pytest.mark.parametrize("group", PAGES)
def test_every_option_of_a_group_is_named_on_its_page(group: str) -> None:
    text = "\n".join((ROOT / "docs" / page).read_text() for page in PAGES[group])
    missing = [option for option in group_options(group) if f"`{option}`" not in text]
    assert missing == [], f"name these in docs/{PAGES[group][0]}: {missing}"
