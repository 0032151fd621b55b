"""Checks against the loaded dataset and the built models, right after each exists and before the test loop."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from preempt.datasets.base import ImageDataset, datasets_hint
from preempt.parts import ConfigError, LabelOnly
from preempt.validation.schema import declared_spec, nested_models, option_name, validate_budget_or_refuse

MODEL_ROLES = ("classifier", "backbone", "victim")
# The groups whose node may carry a budget (eps and norm) of its own.
BUDGETED = ("threat", "defense", "attack")


@dataclass(frozen=True)
class DeclaredImages:
    """What a dataset's loader declares its images to be, before any image is read."""

    name: str
    image_shape: tuple[int, ...]
    num_classes: int | None


def check_parts_fit_declared_dataset(container: dict) -> None:
    """`check_parts_fit_dataset` against the shape the dataset's loader declares, so a run (and a paper-scale plan
    on a machine without the data) refuses a model left at another dataset's shape before any image is read."""
    spec = declared_spec(container, "dataset")
    if spec is not None and spec.input_shape is not None:
        declared = DeclaredImages(option_name(container, "dataset"), tuple(spec.input_shape), spec.num_classes)
        check_parts_fit_dataset(container, declared)


def check_parts_fit_dataset(container: dict, dataset: ImageDataset | DeclaredImages) -> None:
    """Models' declared input shapes and class counts, and the budgets, against the loaded dataset."""
    for role in [*MODEL_ROLES, *nested_models(container, "reversion")]:
        spec = declared_spec(container, role)
        if spec is None:
            continue
        name = option_name(container, role)
        if spec.input_shape is not None and tuple(spec.input_shape) != dataset.image_shape:
            raise ConfigError(shape_message(role, name, spec.input_shape, dataset))
        if None not in (spec.num_classes, dataset.num_classes) and spec.num_classes != dataset.num_classes:
            raise ConfigError(class_count_message(role, name, spec.num_classes, dataset))
    for group in BUDGETED:
        node = container[group]
        budgets = node.get("eps", [])
        for eps in budgets if isinstance(budgets, list) else [budgets]:
            validate_budget_or_refuse(eps, node["norm"], group, dataset.image_shape)


def shape_message(role: str, name: str, shape: tuple[int, ...], dataset: ImageDataset) -> str:
    expected, got = "×".join(map(str, shape)), "×".join(map(str, dataset.image_shape))
    pick = f"model@{role}=<model>" if "." in role else f"{role}=<model>"  # a model set inside a part's config
    return (
        f"{role} {name} takes {expected} images (C×H×W) but dataset {dataset.name} gives {got}: pick a {role} "
        f"made for {got} images ({pick}), or a dataset it takes ({datasets_hint(shape)})"
    )


def class_count_message(role: str, name: str, num_classes: int, dataset: ImageDataset) -> str:
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
                raise ConfigError(class_count_message(role, name, logits.shape[1], dataset))
            raise ConfigError(f"{role} {name} returns shape {tuple(logits.shape)}; expected (batch, num_classes)")
