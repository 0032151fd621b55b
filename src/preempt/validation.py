"""Checks a composed config before any model is built or trained; every refusal names the key and the fix.

The schema of each part is the signature of its `_target_`: parameter names are the allowed keys, and the
annotations (see `preempt.constraints`) give types and ranges. A new defense, attack, dataset or model is
covered as soon as its signature is annotated. Checks that need the dataset (shapes, class counts, batches
per process) run right after it is loaded, and the built models are tried on one real image before the loop.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge, Le
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.errors import PydanticSchemaGenerationError

from preempt.checkpoints import CheckpointError
from preempt.constraints import ARBITRARY_TYPES, AtLeastOne, Eps, NonNegative, Norm, Positive
from preempt.datasets.base import ImageDataset, datasets_hint
from preempt.models.labels import LabelOnly
from preempt.models.spec import ModelSpec, spec_of
from preempt.receiver_defenses.base import Identity, InputTransform, bpda_hint
from preempt.threat import validate_budget

MODEL_ROLES = ("classifier", "backbone", "victim")
PART_GROUPS = ("dataset", *MODEL_ROLES, "defense", "receiver_defense", "reversion", "score_model", "attack", "trainer")
# The models a Preemptive Reversion config may give the attacker (unset: the sender's).
REVERSION_MODELS = ("backbone", "classifier")
# The model the test loop passes to each partial part when it binds it (PreemptiveEvaluation.__init__). An
# attack must take it; a defense takes it only if it needs one (input transforms are model-free).
BOUND_AT_TEST_START = {"defense": "backbone", "attack": "model"}
REQUIRED_BINDINGS = {"attack"}
# Parts built once without their model during validation, so their own cross-setting checks run first.
DRY_BUILT = ("defense", "receiver_defense", "reversion", "attack")
HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


class ConfigError(ValueError):
    """A composed config that cannot give a meaningful result; the message names the key and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Threat(_Strict):
    eps: Eps
    norm: Norm
    oblivious: bool = False


class Speed(_Strict):
    """The `speed` node: how the defense's backbone passes run (`preempt.speed`)."""

    keep_freed_memory: bool

    memory_budget_mb: Positive | None
    bf16: bool
    channels_last: bool
    compile: bool
    cuda_graphs: bool


class Paths(_Strict):
    root_dir: str
    data_dir: str
    model_dir: str
    cache_dir: str
    protected_dir: str
    log_dir: str
    output_dir: str


class RunSchema(_Strict):
    """The top level of conf/main.yaml; each part group is checked against its own `_target_`."""

    task_name: str
    tags: list[str]
    print_config: bool
    skip_finished: bool
    protection_cache: bool
    seed: NonNegative
    randomness: Literal["per_batch", "per_sample"]
    batch_size: AtLeastOne
    num_workers: NonNegative | None
    transmit_8bit: bool
    threat: Threat
    speed: Speed
    paths: Paths
    dataset: dict
    classifier: dict
    backbone: dict
    victim: dict
    defense: dict
    receiver_defense: dict
    reversion: dict
    # The reversion protocol's verdict: reversion succeeds when it lifts clean accuracy more than this above the
    # protected images' (an accuracy difference, so 0.02 is two points).
    reversion_margin: Annotated[float, Ge(0), Le(1)]
    score_model: dict
    attack: dict
    trainer: dict
    logger: dict[str, dict] | None = None


def check_speed(container: dict) -> None:
    """Options that cannot run on this machine are refused before any model is built."""
    if container["speed"]["cuda_graphs"] and not torch.cuda.is_available():
        raise ConfigError("speed.cuda_graphs=true needs a CUDA GPU and none is visible: set speed.cuda_graphs=false")


def validate_config(cfg: DictConfig, scoring: bool = True) -> list[str]:
    """Refuse a config that cannot run meaningfully, before any work; returns warnings to show and record.

    `scoring=False` (commands that only use the images, such as learning a quantization table) leaves out the
    warnings about what the scores would mean.

    Values typed as text that the schema reads as numbers (`threat.eps=8/255`) are written back as numbers.
    """
    container = _resolve(cfg)
    _check(RunSchema, container, prefix="", allowed_hint=True)
    _write_back(cfg, "threat.eps", TypeAdapter(Eps).validate_python(container["threat"]["eps"]))
    container = _resolve(cfg)
    validate_budget_or_refuse(container["threat"]["eps"], container["threat"]["norm"], "threat")
    check_speed(container)

    warnings: list[str] = []
    parts = {}
    for group in PART_GROUPS:
        target, settings = check_part(cfg, container, group)
        if group in DRY_BUILT:
            parts[group] = _dry_build(group, target, settings)
            warnings += parts[group].warnings() if hasattr(parts[group], "warnings") else []
    for name, logger in (container.get("logger") or {}).items():
        if logger is not None:
            check_part(cfg, container["logger"], name, prefix="logger.")
    check_roles(container)
    check_score_model_file(container, parts["receiver_defense"])
    check_score_model_file(container, parts["reversion"])
    warnings += check_receiver_defense(container, parts["receiver_defense"], parts["attack"])
    warnings += check_reversion(cfg, container, parts["reversion"])
    warnings += dataset_warnings(container) if scoring else []
    return warnings


def _resolve(cfg: DictConfig) -> dict:
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as error:
        key = error.full_key
        raise ConfigError(f"{key} must be set (it is ??? in the config): add {key}=... to the command") from None
    except InterpolationResolutionError as error:
        raise ConfigError(f"{error.full_key}: {error.msg}") from None


def _write_back(cfg: DictConfig, key: str, value: Any) -> None:
    """Replace a value the schema converted (text to number), unless it is an interpolation of another key."""
    parent_key, _, name = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not OmegaConf.is_interpolation(parent, name) and parent[name] != value:
        parent[name] = value


def check_part(
    cfg: DictConfig, container: dict, group: str, prefix: str = "", bound: str | None = None
) -> tuple[Callable, dict]:
    """The part's `_target_` imported and its keys checked against the target's signature and annotations.
    `bound` names the model a nested part is given at test start (a top-level group's comes from its name)."""
    key = prefix + group
    node = container.get(group)
    if not isinstance(node, dict) or "_target_" not in node:
        raise ConfigError(f"{key} has no _target_: pick one of its options, e.g. `{group}=<option>` (see --help)")
    try:
        target = get_object(node["_target_"])
    except Exception as error:
        raise ConfigError(f"{key}._target_={node['_target_']} cannot be imported: {error}") from None
    settings = {name: value for name, value in node.items() if name not in HYDRA_KEYS}
    bound = BOUND_AT_TEST_START.get(group) if not prefix else bound
    parameters = _parameters(target)
    if bound is not None and bound not in parameters and group in REQUIRED_BINDINGS:
        raise ConfigError(f"{key}: {node['_target_']} must take `{bound}=`, which the test loop binds at start")
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    allowed = [name for name in parameters if name != bound]
    for name in settings:
        if name not in parameters and not accepts_any:
            raise ConfigError(_unknown_key_message(f"{key}.{name}", name, allowed, node["_target_"]))
    for name, parameter in parameters.items():
        required = parameter.default is inspect.Parameter.empty and parameter.kind not in _VARIADIC
        if required and name != bound and name not in settings:
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
            raise ConfigError(_format_errors(error, f"{key}.{name}")) from None
        if not prefix and isinstance(settings[name], int | float | str) and settings[name] != value:
            _write_back(cfg, f"{key}.{name}", settings[name])
    return target, settings


def _parameters(target: Callable) -> dict[str, inspect.Parameter]:
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


def _unknown_key_message(key: str, name: str, allowed: list[str], owner: str) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    return f"{key} is not a setting of {owner}.{hint} Its settings: {', '.join(allowed) or 'none'}."


def _format_errors(error: ValidationError, key: str) -> str:
    lines = []
    for item in error.errors():
        where = ".".join([key, *map(str, item["loc"])]) if item["loc"] else key
        lines.append(f"{where}={item['input']!r}: {item['msg']}")
    return "; ".join(lines)


def _check(schema: type[BaseModel], data: dict, prefix: str, allowed_hint: bool = False) -> None:
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
                message = _unknown_key_message(key, location[-1], allowed, "the config" if parent is schema else key)
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


def _dry_build(group: str, target: Callable, settings: dict, key: str | None = None) -> Any:
    """Build a defense or attack without its model, so its own cross-setting checks run before any work; a
    refusal names `key` (the group by default)."""
    bound = BOUND_AT_TEST_START.get(group)
    models = {bound: None} if bound is not None and bound in _parameters(target) else {}
    try:
        return target(**settings, **models)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, key or group)) from None
    except (ValueError, TypeError, CheckpointError) as error:  # a weight file the part reads: missing or unfit
        raise ConfigError(f"{key or group}: {error}") from None


def instantiate_score_model(container: dict) -> torch.nn.Module:
    """The score_model group's model; a weight file its loader refuses (missing, unreadable, of another
    architecture) becomes a ConfigError naming the option, with the loader's message of where the file comes from."""
    try:
        return instantiate(container["score_model"])
    except InstantiationException as error:
        if isinstance(error.__cause__, CheckpointError):
            raise ConfigError(f"score_model={option_name(container, 'score_model')}: {error.__cause__}") from None
        raise


def check_score_model_file(container: dict, transform: Any) -> None:
    """A transform that will load a published score model (DiffPure) needs its checkpoint file: a missing one is
    refused now by the model's own loader, which fails at once without it."""
    checkpoint = container["score_model"].get("checkpoint")
    if hasattr(transform, "score_model") and checkpoint is not None and not Path(checkpoint).is_file():
        instantiate_score_model(container)


def check_roles(container: dict) -> None:
    """Label-only models (the ground truth, noisy labels) have no gradients and no logits: they can only label."""
    nodes = [(role, container[role]) for role in ("backbone", "victim")]
    attacker_backbone = container["reversion"].get("backbone")
    if isinstance(attacker_backbone, dict):
        nodes.append(("reversion.backbone", attacker_backbone))
    for role, node in nodes:
        target = get_object(node["_target_"])
        if inspect.isclass(target) and issubclass(target, LabelOnly):
            name = option_name(container, role)
            raise ConfigError(
                f"{role}={name}: a label-only model has no gradients and no logits, so it can only be "
                f"the classifier (classifier=ground_truth is the paper's GT ablation, classifier=noisy_labels the "
                f"reversion protocol's poor classifier). Pick a model for {role}."
            )


def check_reversion(cfg: DictConfig, container: dict, reversion: Any) -> list[str]:
    """The reversion stage must be a reversion attack or an input transform (a blind reversion such as JPEG); the
    sender's defense with a Preemptive Reversion's own settings merged over must be a valid defense config."""
    from preempt.reversions import PreemptiveReversion, Reversion

    name = option_name(container, "reversion")
    if not isinstance(reversion, Reversion | InputTransform):
        raise ConfigError(
            f"reversion={name} is neither a reversion attack (preempt.reversions) nor an input transform "
            f"(preempt.receiver_defenses, a blind reversion such as JPEG): pick one of conf/reversion/"
        )
    if isinstance(reversion, PreemptiveReversion):
        attacker = {"defense_settings": {**container["defense"], **reversion.defense_settings}}
        target, settings = check_part(cfg, attacker, "defense_settings", "reversion.", BOUND_AT_TEST_START["defense"])
        _dry_build("defense", target, settings, key="reversion.defense_settings")
        if container["defense"]["_target_"].endswith("NoDefense"):
            return [f"reversion={name} with defense=none: there is no protection to revert; the guess is what was sent"]
    return []


def reversion_models(reversion: Any) -> dict[str, torch.nn.Module]:
    """The attacker's own models of a Preemptive Reversion, by the key that set them (to check on one image)."""
    return {
        f"reversion.{key}": model
        for key in REVERSION_MODELS
        if isinstance(model := getattr(reversion, key, None), torch.nn.Module) and not isinstance(model, LabelOnly)
    }


def check_receiver_defense(container: dict, transform: Any, attack: Any) -> list[str]:
    """The receiver-side part must be an input transform, a gradient attack must be able to follow it, and BPDA
    and EOT must have a transform to approximate or average."""
    name = option_name(container, "receiver_defense")
    if not isinstance(transform, InputTransform):
        raise ConfigError(
            f"receiver_defense={name} is not an input transform g(x) (preempt.receiver_defenses): the receiver "
            f"classifies g(x) without labels or a backbone. Put sender-side defenses in defense=, e.g. defense={name}"
        )
    oblivious = container["threat"]["oblivious"]
    attack_name = option_name(container, "attack")
    seen = not isinstance(transform, Identity) and not oblivious  # the attacker sees (and attacks through) g
    if getattr(attack, "approximation", "none") == "learned" and not seen:
        raise ConfigError(
            f"attack={attack_name} with attack.approximation=learned imitates the receiver-side defense, and "
            f"{'the attack is oblivious of it' if oblivious else 'there is none'}: set receiver_defense=<transform> "
            f"(and threat.oblivious=false), or attack.approximation=identity"
        )
    warnings = []
    if getattr(attack, "eot_samples", 1) > 1 and not (seen and transform.random):
        warnings.append(
            f"attack.eot_samples={attack.eot_samples} averages over draws of a random receiver-side defense, and the "
            f"attack sees no random one here: every draw gives the same gradient; attack.eot_samples=1 is as strong "
            f"and {attack.eot_samples}× faster"
        )
    if isinstance(transform, Identity):
        if oblivious:
            warnings.append("threat.oblivious=true changes nothing without a receiver_defense")
        return warnings
    if not transform.differentiable and not oblivious and getattr(attack, "needs_gradients", False):
        raise ConfigError(f"receiver_defense={name} with attack={attack_name}: {bpda_hint(transform)}")
    return warnings


def dataset_warnings(container: dict) -> list[str]:
    dataset = container["dataset"]
    if dataset["_target_"].endswith("digits.digits") and dataset.get("split") == "train":
        return [
            "dataset.split=train: the digits zoo models were trained on these images, so accuracy on them is "
            "not a test accuracy; use dataset.split=test (the default)"
        ]
    return []


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
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        if choice := choices.get(role) or choices.get(f"model@{role}"):  # a model set inside a part's config
            return choice
    node = node_at(container, role)
    return node.get("name") or node["_target_"].rsplit(".", 1)[-1]


def check_parts_fit_dataset(container: dict, dataset: ImageDataset) -> None:
    """Models' declared input shapes and class counts, and the budget, against the loaded dataset."""
    roles = [*MODEL_ROLES, *(f"reversion.{key}" for key in REVERSION_MODELS if container["reversion"].get(key))]
    for role in roles:
        spec = declared_spec(container, role)
        if spec is None:
            continue
        name = option_name(container, role)
        if spec.input_shape is not None and tuple(spec.input_shape) != dataset.image_shape:
            raise ConfigError(_shape_message(role, name, spec.input_shape, dataset))
        if spec.num_classes is not None and spec.num_classes != dataset.num_classes:
            raise ConfigError(_class_count_message(role, name, spec.num_classes, dataset))
    for group in ("threat", *BOUND_AT_TEST_START):
        node = container[group]
        budgets = node.get("eps", [])
        for eps in budgets if isinstance(budgets, list) else [budgets]:
            validate_budget_or_refuse(eps, node["norm"], group, dataset.image_shape)


def _shape_message(role: str, name: str, shape: tuple[int, ...], dataset: ImageDataset) -> str:
    expected, got = "×".join(map(str, shape)), "×".join(map(str, dataset.image_shape))
    pick = f"model@{role}=<model>" if "." in role else f"{role}=<model>"  # a model set inside a part's config
    return (
        f"{role} {name} takes {expected} images (C×H×W) but dataset {dataset.name} gives {got}: pick a {role} "
        f"made for {got} images ({pick}), or a dataset it takes ({datasets_hint(shape)})"
    )


def _class_count_message(role: str, name: str, num_classes: int, dataset: ImageDataset) -> str:
    return (
        f"{role} {name} outputs {num_classes} classes but dataset {dataset.name} has {dataset.num_classes} "
        f"(dataset.num_classes): every accuracy would be meaningless. Use a {role} trained on this label set, or "
        f"fix dataset.num_classes"
    )


def check_models_fit_dataset(models: dict, dataset: ImageDataset) -> None:
    """Each built model on one real image: it must take the images and output one logit per class."""
    image = dataset.images[:1]
    for role, model in models.items():
        if isinstance(model, LabelOnly):  # labels only: the classifier it wraps, if any, is what sees the images
            role, model = f"{role}.wrapped", getattr(model, "wrapped", None)
        if not isinstance(model, torch.nn.Module) or isinstance(model, LabelOnly):
            continue
        name = getattr(model, "name", type(model).__name__)
        try:
            with torch.no_grad():
                logits = model(image)
        except Exception as error:
            raise ConfigError(f"{role} {name} fails on one {dataset.name} image: {error}") from error
        if logits.shape != (1, dataset.num_classes):
            if logits.dim() == 2:
                raise ConfigError(_class_count_message(role, name, logits.shape[1], dataset))
            raise ConfigError(f"{role} {name} returns shape {tuple(logits.shape)}; expected (batch, num_classes)")


def expected_processes(trainer: dict) -> int:
    """How many processes the trainer config will start (devices × nodes), as Lightning counts them."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, list):
        count = len(devices)
    elif isinstance(devices, int) and devices > 0:
        count = devices
    elif trainer.get("accelerator", "auto") in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()  # devices "auto" or -1: every visible GPU
    else:
        count = 1
    return count * int(trainer.get("num_nodes", 1))


def check_every_process_gets_a_batch(n_samples: int, batch_size: int, processes: int) -> None:
    """DDP needs a batch on every process: a process with none never joins the metric sync, and the run hangs."""
    batches = math.ceil(n_samples / batch_size)
    if batches >= processes:
        return
    if n_samples < processes:
        raise ConfigError(
            f"{n_samples} samples cannot feed {processes} processes: raise dataset.n_samples to at least "
            f"{processes}, or set trainer.devices={n_samples} (or trainer=default for one process)"
        )
    fitting = next(b for b in range(math.ceil(n_samples / processes), 0, -1) if math.ceil(n_samples / b) >= processes)
    raise ConfigError(
        f"{n_samples} samples at batch_size={batch_size} make {batches} batch(es) for {processes} processes, and "
        f"each process needs one: set batch_size={fitting} (or less), or trainer.devices={batches}"
    )
