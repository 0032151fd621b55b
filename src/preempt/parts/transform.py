"""Input transforms g: [0,1] images to [0,1] images, placed on the receiver's side or the sender's.

On the receiver's side the victim classifies g(x) and the man in the middle attacks victim∘g; on the sender's
side (`defense=<name>`) the sender sends g(x). The same class serves both. Each transform declares whether
autograd through it is meaningful (`differentiable`) and whether it draws randomness per call (`random`):
the attacks and the validation read these facts, so an attack never silently follows zero gradients.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from preempt.parts.defense import Defense


class NonDifferentiableTransformError(RuntimeError):
    """A gradient was requested through a transform whose autograd gradient is zero or meaningless."""


class InputTransform(Defense):
    """g(x): same shape and dtype as x, in [0,1]; randomness comes from torch's RNG, so a seed repeats it.

    A transform needs no backbone on the sender's side (it is model-free): `bound` names only the models a
    transform itself declares (DiffPure's score model).
    """

    bound: ClassVar[tuple[str, ...]] = ()
    differentiable: ClassVar[bool]
    random: ClassVar[bool]

    @abstractmethod
    def transform(self, x: Tensor) -> Tensor:
        """g applied to a batch (B, C, H, W) of [0,1] images."""

    def __call__(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """The sender-side call shape: the labels are not needed by a transform."""
        with torch.no_grad():
            return self.transform(x.detach())

    def approximated(self, x: Tensor) -> Tensor:
        """g(x) in the forward pass with a usable backward pass (BPDA on the non-differentiable parts only, as
        Athalye et al. define it): autograd through a differentiable g, the identity through a non-differentiable
        one. A transform with differentiable stages overrides it to keep their true gradient, from the same
        random draw as the value."""
        if self.differentiable:
            return self.transform(x)
        with torch.no_grad():  # no graph through g: its gradient is replaced
            value = self.transform(x)
        return straight_through(x, value)


def straight_through(x: Tensor, value: Tensor) -> Tensor:
    """`value` in the forward pass, the identity in the backward pass: BPDA's g′(x) = x for one stage."""
    return x + (value - x).detach()


class Identity(InputTransform):
    """No receiver-side defense: the victim sees what arrives."""

    differentiable = True
    random = False
    protects = False

    def transform(self, x: Tensor) -> Tensor:
        return x


def bpda_hint(transform: InputTransform) -> str:
    """Why a gradient attack cannot follow `transform`, and what to run instead."""
    return (
        f"{type(transform).__name__} is not differentiable, so gradients through it are zero or meaningless. "
        f"Attack it with BPDA (Athalye et al.: forward through g, backward through an approximation such as the "
        f"identity): attack=bpda, or attack=bpda_eot for a random g; or set threat.oblivious=true to attack the "
        f"bare victim (an attacker who does not know the defense); or use attack=none to score clean accuracy only"
    )
