"""The call shape every preemptive (sender-side) defense shares."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable

from torch import Tensor, nn


class Defense(ABC):
    """Protects images before they are sent, given the labels the sender's classifier assigned.

    Constructors check every setting and must not touch the backbone: the config validation builds each
    defense once with `backbone=None` to refuse bad settings before any model exists.
    """

    def warnings(self) -> list[str]:
        """Settings that run but probably do not mean what the user wants; shown and kept in results.json."""
        return []

    @abstractmethod
    def __call__(self, x: Tensor, labels: Tensor) -> Tensor:
        """Protected images, same shape and dtype as `x`, in [0,1]."""


class NoDefense(Defense):
    """Sends images unchanged: the undefended baseline."""

    def __init__(self, backbone: nn.Module | None = None) -> None:
        self.backbone = backbone

    def __call__(self, x: Tensor, labels: Tensor) -> Tensor:
        return x


def bind_defense(factory: Callable[..., Defense], backbone: nn.Module | None) -> Defense:
    """The defense built from its config's factory, given the backbone only if it takes one (input transforms
    placed on the sender's side are model-free)."""
    target = getattr(factory, "func", factory)
    return factory(backbone=backbone) if "backbone" in inspect.signature(target).parameters else factory()
