"""Every part of a run built from its composed config and given its models, once.

Parts declare the models they take (`Part.bound`, `Part.models_to_bind`); `bind` is the one function that gives
them, and `Assembly` knows where each comes from in a run: the sender's backbone (as its passes run) for a defense,
the project's A5 robustifier and BPDA approximator (trained on first use), the score model for DiffPure, the
attacked model for an attack, and for Preemptive Reversion the attacker's own defense and labels. The evaluation,
`preempt protect`, the benchmark and the reproduction's pictures all build their parts here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from preempt.evaluation import PreemptiveEvaluation
from preempt.evaluation.protection_cache import protection_cache_for
from preempt.parts import ConfigError, Defense, InputTransform, Part, assign_labels
from preempt.receiver_defenses import receiver_model
from preempt.speed import accelerate
from preempt.validation import (
    MODEL_ROLES,
    check_models_fit_dataset,
    load_score_model,
    option_name,
)
from preempt.zoo.approximators import load_or_train_approximator
from preempt.zoo.robustifiers import RobustifierShape, load_or_train_robustifier


class OnDemand:
    """A model made only if a part asks for it (training a robustifier or an approximator takes minutes): `make`
    gets the part's settings."""

    def __init__(self, make: Callable[[dict], object]) -> None:
        self.make = make


def unwrapped(factory: Callable) -> tuple[Callable, dict[str, Any]]:
    """The part's class (or function) and the keywords a factory holds, through any nesting of partials (Hydra's
    own deferred targets included): the outer keywords win."""
    target, keywords = factory, {}
    while hasattr(target, "func") and hasattr(target, "keywords"):
        keywords = {**target.keywords, **keywords}
        target = target.func
    return target, keywords


def settings_of(factory: Callable) -> dict[str, Any]:
    """A part factory's settings: its config's keywords over its constructor's defaults."""
    target, keywords = unwrapped(factory)
    parameters = inspect.signature(target).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    return {**defaults, **keywords}


def bind(factory: Callable, available: Mapping[str, object]) -> Any:
    """The part `factory` builds, given exactly the models its class asks for (`models_to_bind`) from
    `available` (an `OnDemand` entry is made then). A model it asks for that is not available is a TypeError
    naming both, not a part running without it."""
    target, _ = unwrapped(factory)
    settings = settings_of(factory)
    asks = getattr(target, "models_to_bind", None)
    wanted = asks(settings) if asks is not None else ()
    missing = [name for name in wanted if name not in available]
    if missing:
        raise TypeError(
            f"{target.__qualname__} asks for {', '.join(missing)}, which is not given here "
            f"(given: {', '.join(available) or 'nothing'})"
        )
    given = {name: available[name] for name in wanted}
    return factory(**{name: v.make(settings) if isinstance(v, OnDemand) else v for name, v in given.items()})


class SharedModels:
    """Builds model configs; identical configs (after resolving) share one instance, and its memory."""

    def __init__(self) -> None:
        self.built: list[tuple[dict, object]] = []

    def build(self, node: DictConfig) -> object:
        spec = OmegaConf.to_container(node, resolve=True)
        shared = next((model for other, model in self.built if other == spec), None)
        if shared is None:
            shared = instantiate(node)
            self.built.append((spec, shared))
        return shared


def is_model_node(value: object) -> bool:
    return OmegaConf.is_dict(value) and "_target_" in value


class Assembly:
    """One run's parts, from its composed (and validated) config; models are built once and shared."""

    def __init__(self, cfg: DictConfig, shared: SharedModels | None = None) -> None:
        self.cfg = cfg
        self.config = OmegaConf.to_container(cfg, resolve=True)
        self.shared = shared or SharedModels()
        self.built_score_model: nn.Module | None = None

    def models(self, roles: tuple[str, ...] = MODEL_ROLES) -> dict[str, nn.Module]:
        """Classifier, backbone and victim; roles with identical configs share one instance (and its memory).

        Every role is tried before a missing weight file is reported, so one run names every file to place."""
        models, missing = {}, {}
        for role in roles:
            try:
                models[role] = self.shared.build(self.cfg[role])
            except InstantiationException as error:
                if not isinstance(error.__cause__, FileNotFoundError):
                    raise
                missing.setdefault(str(error.__cause__), []).append(role)
        if missing:
            listed = "\n  ".join(f"{' and '.join(failing)}: {message}" for message, failing in missing.items())
            raise ConfigError(f"{len(missing)} model file(s) missing:\n  {listed}")
        return models

    def fitted(self, group: str, part: Any, image_shape: tuple[int, ...] | None) -> Any:
        """The bound part, refused (naming the option) if it cannot take these images."""
        if image_shape is not None and isinstance(part, Part):
            try:
                part.check_fits(image_shape)
            except ValueError as error:
                raise ConfigError(f"{group}={option_name(self.config, group)}: {error}") from None
        return part

    def defense(
        self,
        backbone: nn.Module,
        passes: nn.Module | None = None,
        node: DictConfig | None = None,
        backbone_config: dict | None = None,
        image_shape: tuple[int, ...] | None = None,
    ) -> Defense:
        """The sender's defense (or `node`, another defense config), its passes run on `passes` (the backbone as
        the `speed` options and the input size make it; `backbone` itself by default); A5 without a checkpoint gets
        the project's robustifier trained against `backbone` (of config `backbone_config`) on the dataset."""
        node = self.cfg.defense if node is None else node
        backbone_config = self.config["backbone"] if backbone_config is None else backbone_config

        def robustifier(settings: dict) -> nn.Module:
            shape = RobustifierShape(settings["eps"], settings["width"], settings["kernel_size"])
            dataset, cache_dir = self.config["dataset"], self.config["paths"]["cache_dir"]
            return load_or_train_robustifier(shape, backbone, backbone_config, dataset, cache_dir)

        available = {"backbone": backbone if passes is None else passes, "robustifier": OnDemand(robustifier)}
        return self.fitted("defense", bind(instantiate(node, _partial_=True), available), image_shape)

    def score_model(self) -> nn.Module:
        """The score_model group's diffusion model, built on first use and shared (a DiffPure receiver and a DiffPure
        reversion purify with one instance)."""
        if self.built_score_model is None:
            self.built_score_model = load_score_model(self.config)
        return self.built_score_model

    def receiver_defense(self, image_shape: tuple[int, ...] | None = None) -> InputTransform:
        available = {"score_model": OnDemand(lambda settings: self.score_model())}
        part = bind(instantiate(self.cfg.receiver_defense, _partial_=True), available)
        return self.fitted("receiver_defense", part, image_shape)

    def reversion(self, models: Mapping[str, nn.Module], dataset: Any) -> Any:
        """The reversion stage. Models set in its config (the attacker's own backbone or classifier) come from the
        shared ones and are tried on one image; Preemptive Reversion gets the defense the attacker re-runs, the
        sender's config with its `defense_settings` merged over, on its backbone, and the attacker's labels."""
        node = self.cfg.reversion
        own = {key: self.shared.build(value) for key, value in node.items() if is_model_node(value)}
        check_models_fit_dataset({f"reversion.{key}": model for key, model in own.items()}, dataset)

        def secondary_defense(settings: dict) -> Defense:
            backbone = settings["backbone"] if settings["backbone"] is not None else models["backbone"]
            defense_node = OmegaConf.merge(self.cfg.defense, settings["defense_settings"] or {})
            backbone_config = self.config["reversion"]["backbone"] or self.config["backbone"]
            return self.defense(backbone, node=defense_node, backbone_config=backbone_config)

        def labeler(settings: dict) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
            classifier = settings["classifier"] if settings["classifier"] is not None else models["classifier"]
            return lambda x, y, index: assign_labels(classifier, x, y, index, dataset.num_classes)

        available = {
            "score_model": OnDemand(lambda settings: self.score_model()),
            "secondary_defense": OnDemand(secondary_defense),
            "labeler": OnDemand(labeler),
        }
        part = bind(instantiate(node, _partial_=True, **own), available)
        return self.fitted("reversion", part, dataset.image_shape)

    def attack(self, model: nn.Module) -> Any:
        """The attack on `model`; BPDA with `approximation=learned` gets its auto-encoder imitating the receiver's
        g, loaded from the cache or trained there on the dataset's training images on first use."""

        def approximator(settings: dict) -> nn.Module:
            cache_dir = self.config["paths"]["cache_dir"]
            return load_or_train_approximator(self.config["receiver_defense"], self.config["dataset"], cache_dir)

        return bind(
            instantiate(self.cfg.attack, _partial_=True), {"model": model, "approximator": OnDemand(approximator)}
        )

    def evaluation(self, dataset: Any) -> PreemptiveEvaluation:
        """The test loop's module: every part built and bound to its models, each model checked against the dataset
        as soon as it is built."""
        models = self.models()
        check_models_fit_dataset(models, dataset)
        reversion = self.reversion(models, dataset)
        receiver_defense = self.receiver_defense(dataset.image_shape)
        backbone, victim = models["backbone"], models["victim"]
        # The `speed` options apply to the sender's passes only: the victim is attacked and scored in fp32.
        defense = self.defense(backbone, accelerate(backbone, self.config["speed"]), image_shape=dataset.image_shape)
        attacked = victim if self.cfg.threat.oblivious else receiver_model(victim, receiver_defense)
        return PreemptiveEvaluation(
            classifier=models["classifier"],
            victim=victim,
            defense=defense,
            attack=self.attack(attacked),
            num_classes=dataset.num_classes,
            seed=self.cfg.seed,
            transmit_8bit=self.cfg.transmit_8bit,
            receiver_defense=receiver_defense,
            reversion=reversion,
            per_sample_randomness=self.cfg.randomness == "per_sample",
            protection_cache=protection_cache_for(self.config),
        )
