"""Bit-depth reduction (BdR; Xu, Evans and Qi's feature squeezing)."""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Ge, Le
from pydantic import validate_call
from torch import Tensor

from preempt.parts import InputTransform


class BitDepth(InputTransform):
    """Each pixel rounded to the nearest of 2**bits levels: perturbations smaller than half a level vanish.

    Xu et al. squeeze MNIST to 1 bit and CIFAR-10 and ImageNet to 5 bits (their detectors' settings).
    """

    differentiable = False
    random = False

    @validate_call
    def __init__(self, bits: Annotated[int, Ge(1), Le(8)] = 5) -> None:
        self.bits = bits

    def transform(self, x: Tensor) -> Tensor:
        levels = 2**self.bits - 1
        return torch.round(x * levels) / levels
