"""SHIELD's stochastic local quantization (Das et al. 2018): real JPEG at a random quality per 8×8 block."""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import MinLen
from pydantic import validate_call
from torch import Tensor

from preempt.parts import InputTransform
from preempt.receiver_defenses.jpeg import Quality, jpeg_round_trip

BLOCK = 8


class Shield(InputTransform):
    """Each image is compressed whole at every quality; each 8×8 block then takes one of them at random.

    As in the authors' code the choice is per block and shared by the color channels, so every block equals
    the same block of one libjpeg output (default qualities 20, 40, 60, 80). BPDA passes all of g straight
    through (`approximated`'s default): every block is libjpeg's, which has no stage autograd can follow.
    """

    differentiable = False
    random = True

    @validate_call
    def __init__(self, qualities: Annotated[list[Quality], MinLen(1)] = (20, 40, 60, 80)) -> None:
        self.qualities = list(qualities)

    def transform(self, x: Tensor) -> Tensor:
        compressed = jpeg_round_trip(x, self.qualities)  # (Q, B, C, H, W)
        batch, _, height, width = x.shape
        rows, cols = -(-height // BLOCK), -(-width // BLOCK)
        choice = torch.randint(len(self.qualities), (batch, rows, cols), device=x.device)
        choice = choice.repeat_interleave(BLOCK, 1).repeat_interleave(BLOCK, 2)[:, :height, :width]
        index = choice[None, :, None].expand(1, *x.shape)
        return compressed.gather(0, index)[0]
