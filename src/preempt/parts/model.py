"""What the framework knows of a model before and after it is built.

Before: a loader declares its `ModelSpec` (input shape and class count, from its settings alone), so a
dataset/model mismatch is refused in seconds, not after minutes of training or a gigabyte of weights; the built
model is checked again on one real image before the test loop starts. After: a model gives logits for [0,1]
pixels, or, for the classifier role only, labels (`LabelOnly`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor, nn

Loader = TypeVar("Loader", bound=Callable)


@dataclass(frozen=True)
class ModelSpec:
    """Input shape (C, H, W) and class count; None where the model takes any (the ground-truth labeler)."""

    input_shape: tuple[int, int, int] | None
    num_classes: int | None


def declares_spec(spec: Callable[..., ModelSpec]) -> Callable[[Loader], Loader]:
    """Attach `spec(**settings) -> ModelSpec` to a loader; it must be cheap and take the loader's settings."""

    def attach(loader: Loader) -> Loader:
        loader.spec = spec
        return loader

    return attach


def spec_of(loader: Callable, settings: dict) -> ModelSpec | None:
    """The loader's declared spec for these settings, or None for a loader that declares none."""
    spec = getattr(loader, "spec", None)
    return spec(**settings) if spec is not None else None


class LabelOnly(ABC):
    """A classifier-role model that outputs labels, not logits: it has no gradients, so it can only label the
    sender's images (never be a backbone or a victim). It may read the true labels and the samples' indices."""

    @abstractmethod
    def labels(self, x: Tensor, y: Tensor, index: Tensor, num_classes: int) -> Tensor:
        """Labels for images `x` whose true labels are `y` and dataset indices `index`."""


def assign_labels(classifier: nn.Module | LabelOnly, x: Tensor, y: Tensor, index: Tensor, num_classes: int) -> Tensor:
    """What `classifier` says about `x`: a label-only model's labels, or a model's top class."""
    if isinstance(classifier, LabelOnly):
        return classifier.labels(x, y, index, num_classes)
    with torch.no_grad():
        return classifier(x).argmax(dim=1)
