"""Feature Distillation (Liu et al. 2019): JPEG-style 8×8 DCT quantization with a DNN-oriented table."""

from __future__ import annotations

import torch
from pydantic import validate_call
from torch import Tensor

from preempt.parts import InputTransform
from preempt.receiver_defenses.dct import quantize, read_table

# The authors' published table: steps of 25 on the 4×4 lowest frequencies (the band the network needs) and 30
# elsewhere, applied to each RGB channel on 0–255 values. The second paper's code uses the same table.
FEATURE_DISTILLATION_TABLE = torch.full((8, 8), 30.0, dtype=torch.float64)
FEATURE_DISTILLATION_TABLE[:4, :4] = 25.0


def quantization_table(path: str | None) -> Tensor:
    """The table in the file at `path`, or Feature Distillation's when none is given."""
    return read_table(path) if path is not None else FEATURE_DISTILLATION_TABLE


class FeatureDistillation(InputTransform):
    """Deterministic quantization of each 8×8 block's DCT coefficients (a `table` file replaces FD's table).

    BPDA passes all of g straight through (`approximated`'s default): straight-through at the coefficients'
    rounding alone is the same identity, the block DCT being orthonormal."""

    differentiable = False
    random = False

    @validate_call
    def __init__(self, table: str | None = None) -> None:
        self.table_path = table
        self.table = quantization_table(table)

    def transform(self, x: Tensor) -> Tensor:
        return quantize(x, self.table)
