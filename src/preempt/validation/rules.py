"""The run's own schema and the rules across its parts, checked on the composed config before any model is built or
trained; every refusal names the key and the fix.

Each part group is checked against its `_target_`'s signature (`preempt.validation.schema`) and built once without
its models, so its own cross-setting checks run first; then the rules that involve several parts (a gradient
attack through a non-differentiable receiver-side defense, a reversion of nothing, roles a label-only model
cannot fill). Checks that need the dataset and the built models are in `preempt.validation.fit`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge, Le
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig
from pydantic import BaseModel, ConfigDict, TypeAdapter

from preempt.attacks.base import Attack
from preempt.checkpoints import CheckpointError
from preempt.parts import ConfigError, Defense, Identity, InputTransform, LabelOnly, Reversion, bpda_hint
from preempt.parts.constraints import AtLeastOne, Eps, NonNegative, Norm, Positive, Seed
from preempt.validation.fit import MODEL_ROLES
from preempt.validation.schema import (
    bound_models,
    check_part,
    check_schema,
    dry_build,
    nested_models,
    option_name,
    resolve,
    validate_budget_or_refuse,
    write_back,
)
from preempt.validation.targets import check_trusted_targets

PART_GROUPS = ("dataset", *MODEL_ROLES, "defense", "receiver_defense", "reversion", "score_model", "attack", "trainer")
# What each part group's target must be (the contract the test loop calls it through), and how to say so.
CONTRACTS = {
    "defense": ((Defense,), "a sender-side defense (preempt.parts.Defense)"),
    "receiver_defense": ((InputTransform,), "an input transform g(x) (preempt.parts.InputTransform)"),
    "reversion": ((Reversion, InputTransform), "a reversion attack or an input transform (a blind reversion)"),
    "attack": ((Attack,), "an attack (preempt.attacks.base.Attack)"),
}


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
    chunk_timings: str | None
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
    seed: Seed
    randomness: Literal["per_batch", "per_sample"]
    batch_size: AtLeastOne
    num_workers: NonNegative | None
    transmit_8bit: bool
    evaluate_on: Literal["all", "victim_correct"]
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
    container = resolve(cfg)
    check_trusted_targets(container)  # before any part's module is imported
    check_schema(RunSchema, container, prefix="", allowed_hint=True)
    if write_back(cfg, "threat.eps", TypeAdapter(Eps).validate_python(container["threat"]["eps"])):
        container = resolve(cfg)
    validate_budget_or_refuse(container["threat"]["eps"], container["threat"]["norm"], "threat")
    check_speed(container)

    warnings: list[str] = []
    parts = {}
    for group in PART_GROUPS:
        target, settings = check_part(cfg, container, group)
        if group in CONTRACTS:
            parts[group] = check_contract(group, container, dry_build(target, settings, group))
            warnings += parts[group].warnings()
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


def check_contract(group: str, container: dict, part: Any) -> Any:
    """The part built for `group` must be what the test loop calls it as."""
    kinds, what = CONTRACTS[group]
    if isinstance(part, kinds):
        return part
    name = option_name(container, group)
    if group == "receiver_defense":
        raise ConfigError(
            f"receiver_defense={name} is not an input transform g(x) (preempt.receiver_defenses): the receiver "
            f"classifies g(x) without labels or a backbone. Put sender-side defenses in defense=, e.g. defense={name}"
        )
    if group == "reversion":
        raise ConfigError(
            f"reversion={name} is neither a reversion attack (preempt.reversions) nor an input transform "
            f"(preempt.receiver_defenses, a blind reversion such as JPEG): pick one of conf/reversion/"
        )
    raise ConfigError(f"{group}={name} ({type(part).__name__}) is not {what}: pick one of conf/{group}/")


def load_score_model(container: dict) -> torch.nn.Module:
    """The score_model group's model; a weight file its loader refuses (missing, unreadable, of another
    architecture) becomes a ConfigError naming the option, with the loader's message of where the file comes from."""
    try:
        return instantiate(container["score_model"])
    except InstantiationException as error:
        if isinstance(error.__cause__, CheckpointError):
            raise ConfigError(f"score_model={option_name(container, 'score_model')}: {error.__cause__}") from None
        raise


def check_score_model_file(container: dict, part: Any) -> None:
    """A part that will load a published score model (DiffPure) needs its checkpoint file: a missing one is
    refused now by the model's own loader, which fails at once without it."""
    checkpoint = container["score_model"].get("checkpoint")
    if "score_model" in bound_models(type(part)) and checkpoint is not None and not Path(checkpoint).is_file():
        load_score_model(container)


def check_roles(container: dict) -> None:
    """Label-only models (the ground truth, noisy labels) have no gradients and no logits: they can only label."""
    roles = ["backbone", "victim", *(role for role in nested_models(container, "reversion") if "backbone" in role)]
    for role in roles:
        node = container
        for key in role.split("."):
            node = node[key]
        target = get_object(node["_target_"])
        if inspect.isclass(target) and issubclass(target, LabelOnly):
            name = option_name(container, role)
            raise ConfigError(
                f"{role}={name}: a label-only model has no gradients and no logits, so it can only be "
                f"the classifier (classifier=ground_truth is the paper's GT ablation, classifier=noisy_labels the "
                f"reversion protocol's poor classifier). Pick a model for {role}."
            )


def check_reversion(cfg: DictConfig, container: dict, reversion: Any) -> list[str]:
    """The sender's defense with a Preemptive Reversion's own settings merged over must be a valid defense config,
    and there must be a protection to revert."""
    if "secondary_defense" not in bound_models(type(reversion)):  # it does not re-run the sender's defense
        return []
    attacker = {"defense_settings": {**container["defense"], **reversion.defense_settings}}
    target, checked = check_part(cfg, attacker, "defense_settings", "reversion.")
    dry_build(target, checked, "reversion.defense_settings")
    if not get_object(container["defense"]["_target_"]).protects:
        name = option_name(container, "reversion")
        return [f"reversion={name} with defense=none: there is no protection to revert; the guess is what was sent"]
    return []


def check_receiver_defense(container: dict, transform: InputTransform, attack: Any) -> list[str]:
    """A gradient attack must be able to follow the receiver-side part, and BPDA and EOT must have a transform to
    approximate or average."""
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
            f"attack sees no random one here: every draw would give the same gradient, so one is drawn (the attack "
            f"is BPDA alone; attack.eot_samples=1 says so)"
        )
    if isinstance(transform, Identity):
        if oblivious:
            warnings.append("threat.oblivious=true changes nothing without a receiver_defense")
        return warnings
    if not transform.differentiable and not oblivious and attack.needs_gradients:
        name = option_name(container, "receiver_defense")
        raise ConfigError(f"receiver_defense={name} with attack={attack_name}: {bpda_hint(transform)}")
    return warnings


def dataset_warnings(container: dict) -> list[str]:
    """What a loader says before it is built (its `listing_warnings`: the files of a folder it will not use, with
    why), and evaluating on the split the project's own models were trained on (a loader's `zoo_training_split`)."""
    dataset = container["dataset"]
    loader = get_object(dataset["_target_"])
    listing = getattr(loader, "listing_warnings", None)
    warnings = listing(**{key: value for key, value in dataset.items() if not key.startswith("_")}) if listing else []
    split = getattr(loader, "zoo_training_split", None)
    if split is not None and dataset.get("split") == split:
        warnings.append(
            f"dataset.split={split}: the digits zoo models were trained on these images, so accuracy on them is "
            f"not a test accuracy; use dataset.split=test (the default)"
        )
    return warnings
