"""Bit-depth reduction (BdR; Xu, Evans and Qi's feature squeezing)."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from annotated_types import Ge, Le
from pydantic import validate_call
from torch import Tensor

from preempt.parts import InputTransform


class BitDepth(InputTransform):
    """Each pixel moved to one of 2**bits levels: perturbations that stay within a level vanish.

    `rounding=round` (Xu et al.): the nearest of the levels k/(2**bits − 1), which span [0,1]. They squeeze
    MNIST to 1 bit and CIFAR-10 and ImageNet to 5 bits (their detectors' settings).
    `rounding=floor` (the second paper's code, taken from Athalye et al.'s): truncate to 8 bits, then clear the low
    8 − bits bits, i.e. floor to the levels k·2**(8 − bits)/255; the top level is below 1 (224/255 at 3 bits),
    so the image also darkens. BPDA passes all of g straight through (`approximated`'s default): g is a rounding.
    """

    differentiable = False
    random = False

    @validate_call
    def __init__(self, bits: Annotated[int, Ge(1), Le(8)] = 5, rounding: Literal["round", "floor"] = "round") -> None:
        self.bits = bits
        self.rounding = rounding

    def transform(self, x: Tensor) -> Tensor:
        if self.rounding == "floor":
            # floor(floor(255·x) / step) = floor(255·x / step) for an integer step: one floor does both truncations.
            step = 2 ** (8 - self.bits)
            return torch.floor(x * 255 / step) * step / 255
        levels = 2**self.bits - 1
        return torch.round(x * levels) / levels
