"""The call shape every attack shares (torchattacks/AutoAttack style)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import Tensor, nn

from preempt.constraints import Eps, Norm
from preempt.threat import validate_budget


class Attack(ABC):
    """Perturbs images within an eps-ball in `norm` to make `model` misclassify them.

    Constructors check every setting and must not touch the model: the config validation builds each attack
    once with `model=None` to refuse bad settings before any model exists. `needs_gradients` says whether it
    follows the model's input gradients, which a non-differentiable receiver-side defense does not have.
    """

    needs_gradients: ClassVar[bool] = True

    def __init__(self, model: nn.Module | None, eps: Eps, norm: Norm) -> None:
        validate_budget(eps, norm)
        self.model = model
        self.eps = eps
        self.norm = norm

    @abstractmethod
    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial images for clean images `x` in [0,1] with true labels `y`."""


class NoAttack:
    """The identity: scores the protected images as they arrive."""

    norm = "Linf"
    needs_gradients = False

    def __init__(self, model: nn.Module | None) -> None:
        self.model = model

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        return x
