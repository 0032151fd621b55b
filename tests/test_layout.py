"""The three layers hold: the parts import nothing else of the project, nothing below imports a command, the
libraries import each other without a cycle; and every module with logic has its mirrored test file."""

from __future__ import annotations

import ast
import functools
import graphlib
from pathlib import Path

from conftest import ROOT

SOURCE = ROOT / "src" / "preempt"
# The entry points that sit above the commands: `python -m preempt` and src/main.py.
ENTRY_POINTS = {"preempt.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def project_imports() -> dict[str, set[str]]:
    """Every module of the package and the project modules it imports (at any depth of its code)."""
    found = {}
    for path in sorted(SOURCE.rglob("*.py")):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("preempt"):
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names if alias.name.startswith("preempt")}
        found[module_name(path)] = imported
    return found


def unit(module: str) -> str:
    """The room a module belongs to: `preempt.<package or module>`."""
    return ".".join(module.split(".")[:2])


def test_the_parts_import_nothing_of_the_project_above_them() -> None:
    for module, imported in project_imports().items():
        if unit(module) == "preempt.parts":
            assert {unit(name) for name in imported} <= {"preempt.parts"}, module


def test_nothing_below_the_commands_imports_one() -> None:
    for module, imported in project_imports().items():
        if unit(module) != "preempt.commands" and module not in ENTRY_POINTS:
            assert not {name for name in imported if unit(name) == "preempt.commands"}, module


def test_the_libraries_import_each_other_without_a_cycle() -> None:
    """Between rooms (a package, or a module beside them) the imports form a DAG: every one runs down a floor."""
    graph: dict[str, set[str]] = {}
    for module, imported in project_imports().items():
        graph.setdefault(unit(module), set()).update(unit(name) for name in imported if unit(name) != unit(module))
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
    assert order.index("preempt.parts") < order.index("preempt.assembly") < order.index("preempt.commands")


def needs_a_test(path: Path) -> bool:
    """A module with logic: any but a package's face (an __init__ that only hands names on) and `__main__`."""
    if path.name == "__main__.py":
        return False
    tree = ast.parse(path.read_text())
    return path.name != "__init__.py" or any(not isinstance(node, ast.Import | ast.ImportFrom | ast.Expr | ast.Assign)
                                             for node in tree.body)  # fmt: skip


def mirrored_test(path: Path) -> Path:
    relative = path.relative_to(SOURCE)
    return ROOT / "tests" / relative.parent / f"test_{relative.stem}.py"


def test_every_module_with_logic_has_its_mirrored_test_file() -> None:
    missing = [str(path.relative_to(SOURCE)) for path in sorted(SOURCE.rglob("*.py"))
               if needs_a_test(path) and not mirrored_test(path).is_file()]  # fmt: skip
    assert missing == [], f"write tests/<package>/test_<module>.py for: {missing}"


def test_every_test_file_mirrors_a_module_or_tests_the_project_as_a_whole() -> None:
    """A test file beside no module is a project-wide check (configs, properties, docs, layout, launchers)."""
    project_wide = {"test_configs.py", "test_properties.py", "test_readme.py", "test_layout.py", "test_launchers.py"}
    modules = {mirrored_test(path) for path in SOURCE.rglob("*.py")}
    strays = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "tests").rglob("test_*.py"))
              if path not in modules and path.name not in project_wide and "data" not in path.parts]  # fmt: skip
    assert strays == []
