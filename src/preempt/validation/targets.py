"""Which `_target_`s a composed config may build: the project's own package, the Lightning trainer, loggers,
callbacks, strategies and cluster environments its configs use, and the modules the user names in the environment
variable PREEMPT_TRUSTED_MODULES.

Hydra imports and calls whatever a `_target_` names, so without this a shared table or config file could run any
function (`classifier._target_=shutil.copy`). The list is an environment variable so that no file can widen it.
Names are checked before anything is imported (importing a module runs its code), then what each name resolves
to must be defined in a trusted module too (`preempt.results.store.shutil.copy` is shutil's `copy`).
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Iterator
from typing import Any

from hydra.utils import get_object

from preempt.parts import ConfigError

TRUSTED_MODULES_VARIABLE = "PREEMPT_TRUSTED_MODULES"
# Prefixes of what the project's configs build (`grep -rn _target_ conf`): matched on whole dotted components.
PROJECT_TARGETS = (
    "preempt",
    "lightning.Trainer",
    "lightning.pytorch.trainer.trainer.Trainer",  # where lightning.Trainer is defined
    "lightning.pytorch.loggers",
    "lightning.pytorch.callbacks",
    # A trainer's strategy and cluster environment (DDP over gloo, several one-GPU nodes: `make gpu-check`).
    "lightning.pytorch.strategies",
    "lightning.fabric.plugins.environments",
)
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def trusted_prefixes() -> tuple[str, ...]:
    """The project's targets and the user's modules; a malformed entry is refused rather than silently matching
    nothing (or everything)."""
    named = [entry.strip() for entry in os.environ.get(TRUSTED_MODULES_VARIABLE, "").split(",") if entry.strip()]
    for entry in named:
        if not MODULE_NAME.fullmatch(entry):
            raise ConfigError(
                f"{TRUSTED_MODULES_VARIABLE}={os.environ[TRUSTED_MODULES_VARIABLE]}: {entry!r} is not a module name; "
                f"give comma-separated dotted module names, e.g. {TRUSTED_MODULES_VARIABLE}=my_models,lab.nets"
            )
    return (*PROJECT_TARGETS, *named)


def is_trusted(name: str, prefixes: tuple[str, ...]) -> bool:
    """`name` is a prefix or lies under one: `preempt.x` is under `preempt`, `preempt_evil.x` is not."""
    return any(name == prefix or name.startswith(f"{prefix}.") for prefix in prefixes)


def refusal(key: str, target: Any, why: str) -> ConfigError:
    return ConfigError(
        f"{key}={target}: {why}. A config builds only the project's parts (preempt.*) and Lightning's trainer, "
        f"loggers and callbacks, so no table or config file can run other code. Pick one of the project's options "
        f"(see --help), or, if it is your own code, name its module in the environment variable "
        f"{TRUSTED_MODULES_VARIABLE} (comma-separated module names, e.g. {TRUSTED_MODULES_VARIABLE}=my_models)"
    )


def check_target_name(key: str, target: Any, prefixes: tuple[str, ...]) -> None:
    """The `_target_` at `key` names a trusted callable; nothing is imported."""
    if not isinstance(target, str):
        raise refusal(key, target, "a _target_ is the dotted name of a class or function")
    if not is_trusted(target, prefixes):
        raise refusal(key, target, f"{target.rpartition('.')[0] or target} is not a trusted module")


def defined_name(found: Any) -> str:
    """Where a located object is defined: `module.QualifiedName` (a module: its own name)."""
    if inspect.ismodule(found):
        return found.__name__
    module = getattr(found, "__module__", None) or type(found).__module__
    return f"{module}.{getattr(found, '__qualname__', None) or type(found).__qualname__}"


def locate_trusted(key: str, target: Any, prefixes: tuple[str, ...] | None = None) -> Any:
    """The class or function a `_target_` names, imported only once its name is trusted, and refused unless it is
    defined in a trusted module (a name can reach another module's function through an attribute)."""
    prefixes = trusted_prefixes() if prefixes is None else prefixes
    check_target_name(key, target, prefixes)
    try:
        found = get_object(target)
    except Exception as error:
        raise ConfigError(f"{key}={target} cannot be imported: {error}") from None
    defined = defined_name(found)
    if not is_trusted(defined, prefixes):
        raise refusal(key, target, f"it is {defined}, defined outside the trusted modules")
    return found


def targets_in(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """Every `_target_` in a config container, at any depth (lists too), with its key (`trainer.callbacks[0]`)."""
    if isinstance(node, dict):
        for name, value in node.items():
            path = f"{key}.{name}" if key else str(name)
            if name == "_target_":
                yield path, value
            else:
                yield from targets_in(value, path)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from targets_in(value, f"{key}[{index}]")


def check_trusted_targets(container: dict, key: str = "") -> None:
    """Refuse a resolved config (the node at `key`) that would build anything untrusted: every name first, before
    any import."""
    prefixes = trusted_prefixes()
    found = list(targets_in(container, key))
    for where, target in found:
        check_target_name(where, target, prefixes)
    for where, target in found:
        locate_trusted(where, target, prefixes)
