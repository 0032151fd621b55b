"""The call shape every preemptive (sender-side) defense shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import Tensor

from preempt.parts.part import Part


class Defense(Part, ABC):
    """Protects images before they are sent, given the labels the sender's classifier assigned.

    A defense is given the sender's `backbone` at test start (its passes as the `speed` options run them).
    Constructors check every setting and must not touch the backbone: the config validation builds each
    defense once with `backbone=None` to refuse bad settings before any model exists.
    """

    bound: ClassVar[tuple[str, ...]] = ("backbone",)
    # Whether the defense changes the images at all (a reversion has something to revert; a protection to cache).
    protects: ClassVar[bool] = True

    @abstractmethod
    def __call__(self, x: Tensor, labels: Tensor) -> Tensor:
        """Protected images, same shape and dtype as `x`, in [0,1]."""

    def prepare(self, x: Tensor) -> None:
        """One-off work for batches like `x` that is not the defense's cost per image (Fast Preemption times its
        chunk size once): whoever times the defense calls this first, with gradients enabled."""


class NoDefense(Defense):
    """Sends images unchanged: the undefended baseline."""

    bound: ClassVar[tuple[str, ...]] = ()
    protects: ClassVar[bool] = False

    def __call__(self, x: Tensor, labels: Tensor) -> Tensor:
        return x
