"""The signature-as-schema engine: each `_target_`'s signature and annotations are the schema of its config node.

Parameter names are the allowed keys, the annotations (`preempt.parts.constraints`) give types and ranges, and the
models a part declares in `bound` are no keys at all (they are given at test start). A new defense, attack,
dataset or model is covered as soon as its signature is annotated. Every refusal names the key and the fix.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import typing
from collections.abc import Callable
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.errors import PydanticSchemaGenerationError

from preempt.checkpoints import CheckpointError
from preempt.parts import ConfigError
from preempt.parts.constraints import ARBITRARY_TYPES
from preempt.parts.model import ModelSpec, spec_of
from preempt.threat import validate_budget
from preempt.validation.targets import locate_trusted

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def resolve(cfg: DictConfig) -> dict:
    """The config as plain data, every interpolation resolved; a ??? left or a broken `${...}` names its key."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as error:
        key = error.full_key
        raise ConfigError(f"{key} must be set (it is ??? in the config): add {key}=... to the command") from None
    except InterpolationResolutionError as error:
        raise ConfigError(f"{error.full_key}: {error.msg}") from None


def write_back(cfg: DictConfig, key: str, value: Any) -> bool:
    """Replace a value the schema converted (text to number), unless it is an interpolation of another key; returns
    whether it did (so the config need be resolved again only then)."""
    parent_key, _, name = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if OmegaConf.is_interpolation(parent, name) or parent[name] == value:
        return False
    parent[name] = value
    return True


def bound_models(target: Callable) -> tuple[str, ...]:
    """The models a part's class declares it is given at test start (`Part.bound`): parameters, not config keys."""
    return tuple(getattr(target, "bound", ()))


def check_part(cfg: DictConfig, container: dict, group: str, prefix: str = "") -> tuple[Callable, dict]:
    """The part's `_target_` imported and its keys checked against the target's signature and annotations."""
    key = prefix + group
    node = container.get(group)
    if not isinstance(node, dict) or "_target_" not in node:
        raise ConfigError(f"{key} has no _target_: pick one of its options, e.g. `{group}=<option>` (see --help)")
    target = locate_trusted(f"{key}._target_", node["_target_"])
    settings = {name: value for name, value in node.items() if name not in HYDRA_KEYS}
    bound = bound_models(target)
    parameters = parameters_of(target)
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    allowed = [name for name in parameters if name not in bound]
    for name in settings:
        if (name not in parameters or name in bound) and not accepts_any:
            raise ConfigError(unknown_key_message(f"{key}.{name}", name, allowed, node["_target_"]))
    for name, parameter in parameters.items():
        required = parameter.default is inspect.Parameter.empty and parameter.kind not in _VARIADIC
        if required and name not in bound and name not in settings:
            raise ConfigError(f"{key}.{name} is required by {node['_target_']}: add +{key}.{name}=... ")
    hints = _hints(target)
    for name, value in settings.items():
        if isinstance(value, dict) and "_target_" in value:  # a part inside the part (a model config): its own schema
            check_part(cfg, node, name, prefix=f"{key}.")
            continue
        adapter = _adapter(hints.get(name))
        if adapter is None:
            continue
        try:
            settings[name] = adapter.validate_python(value)
        except ValidationError as error:
            raise ConfigError(format_errors(error, f"{key}.{name}")) from None
        if not prefix and isinstance(settings[name], int | float | str) and settings[name] != value:
            write_back(cfg, f"{key}.{name}", settings[name])
    return target, settings


def parameters_of(target: Callable) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return {"kwargs": inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)}


def _hints(target: Callable) -> dict[str, Any]:
    function = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception:  # annotations naming types the library only imports for type checkers
        return {}


@functools.cache
def _adapter(hint: Any) -> TypeAdapter | None:
    """A validator for one annotation; None where no schema can be made (arbitrary library types)."""
    if hint is None:
        return None
    try:
        return TypeAdapter(hint, config=ARBITRARY_TYPES)
    except (PydanticSchemaGenerationError, TypeError):
        return None


def unknown_key_message(key: str, name: str, allowed: list[str], owner: str) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    return f"{key} is not a setting of {owner}.{hint} Its settings: {', '.join(allowed) or 'none'}."


def format_errors(error: ValidationError, key: str) -> str:
    lines = []
    for item in error.errors():
        where = ".".join([key, *map(str, item["loc"])]) if item["loc"] else key
        lines.append(f"{where}={item['input']!r}: {item['msg']}")
    return "; ".join(lines)


def check_schema(schema: type[BaseModel], data: dict, prefix: str, allowed_hint: bool = False) -> None:
    """`data` against a pydantic schema; unknown keys get a "did you mean", every problem names its key."""
    try:
        schema.model_validate(data)
    except ValidationError as error:
        messages = []
        for item in error.errors():
            location = [str(part) for part in item["loc"]]
            key = prefix + ".".join(location)
            if item["type"] == "extra_forbidden":
                parent = schema
                for part in location[:-1]:
                    parent = parent.model_fields[part].annotation
                allowed = list(parent.model_fields)
                message = unknown_key_message(key, location[-1], allowed, "the config" if parent is schema else key)
                if allowed_hint and len(location) == 1:
                    message += " To pick an option of a group write group=option (no +), e.g. defense=none."
                messages.append(message)
            else:
                messages.append(f"{key}={item['input']!r}: {item['msg']}")
        raise ConfigError("; ".join(messages)) from None


def read_section(schema: Callable, settings: dict, key: str) -> Any:
    """A command's own config section (a training recipe) built by its schema; each refusal names `key.<field>`."""
    try:
        return schema(**settings)
    except ValidationError as error:
        problems = [f"{key}.{'.'.join(map(str, e['loc']))}={e['input']!r}: {e['msg']}" for e in error.errors()]
        raise ConfigError("; ".join(problems)) from None


def validate_budget_or_refuse(eps: float, norm: str, key: str, image_shape: tuple[int, ...] | None = None) -> None:
    """`threat.validate_budget` with the key named; with the image shape, L2 budgets beyond the image too."""
    try:
        validate_budget(eps, norm)
    except ValueError as error:
        raise ConfigError(f"{key}: {error}") from None
    if norm == "L2" and image_shape is not None:
        largest = math.sqrt(math.prod(image_shape))
        if eps > largest:
            raise ConfigError(
                f"{key}.eps={eps} is larger than the largest L2 distance between two {'×'.join(map(str, image_shape))} "
                f"images in [0,1] ({largest:.1f}); L2 budgets are in [0,1] pixel units (e.g. 0.5 on CIFAR-10)"
            )


def dry_build(target: Callable, settings: dict, key: str) -> Any:
    """Build a part without its models (each declared bound model None), so its own cross-setting checks run
    before any work; a refusal names `key`."""
    parameters = parameters_of(target)
    models = {name: None for name in bound_models(target) if name in parameters}
    try:
        return target(**settings, **models)
    except ValidationError as error:
        raise ConfigError(format_errors(error, key)) from None
    except (ValueError, TypeError, CheckpointError) as error:  # a weight file the part reads: missing or unfit
        raise ConfigError(f"{key}: {error}") from None


def node_at(container: dict, role: str) -> dict:
    """The config node of a role, or of a model set inside a part (`reversion.backbone`)."""
    node = container
    for key in role.split("."):
        node = node[key]
    return node


def declared_spec(container: dict, role: str) -> ModelSpec | None:
    node = node_at(container, role)
    settings = {name: value for name, value in node.items() if name not in HYDRA_KEYS}
    return spec_of(get_object(node["_target_"]), settings)


def option_name(container: dict, role: str) -> str:
    """What the user picked for `role` (`victim=digits_lenet_at`), so a message points at a config file."""
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        if choice := choices.get(role) or choices.get(f"model@{role}"):  # a model set inside a part's config
            return choice
    node = node_at(container, role)
    return node.get("name") or node["_target_"].rsplit(".", 1)[-1]


def nested_models(container: dict, group: str) -> list[str]:
    """The roles of the models set inside a part's config (`reversion.backbone`): keys whose value is a model node."""
    node = container.get(group) or {}
    return [f"{group}.{key}" for key, value in node.items() if isinstance(value, dict) and "_target_" in value]
