"""What a model config will accept and output, known from its settings before any weight is built or trained.

Loaders declare it so a dataset/model mismatch is refused in seconds, not after minutes of training or a
gigabyte of weights; the built model is checked again on one real image before the test loop starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

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
