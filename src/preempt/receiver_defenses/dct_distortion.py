"""The second paper's defense (Algorithm 1): 8×8 DCT quantization with a defensive table, then grid distortion.

Quantization removes the perturbation's effect where the table's steps are large (and makes g
non-differentiable); the distortion redraws every grid's size at random on each call, so no fixed
differentiable function approximates g well (the paper's Property 3).
"""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Ge, Le
from pydantic import validate_call
from torch import Tensor

from preempt.parts import InputTransform
from preempt.parts.constraints import AtLeastOne
from preempt.receiver_defenses.base import remap
from preempt.receiver_defenses.dct import quantize
from preempt.receiver_defenses.feature_distillation import quantization_table

DistortionLimit = Annotated[float, Ge(0), Le(1)]


def distorted_axis(size: int, batch: int, limit: float, grid: int, device: torch.device) -> Tensor:
    """For each image, the source index each output row (or column) reads, or -1 where it reads outside.

    Output cells are regular (`grid` pixels); output cell m reads the source span that starts where the
    previous one ended and is grid·(1+δ_m) long, δ_m ~ U(−limit, limit) (Algorithm 1, lines 10–19). Spans
    longer than a cell drop rows (compression), shorter ones repeat rows (stretching); what the spans leave
    past the image's end is dropped, and output read past it is padded. A random flip of the axis picks one
    of the four starting corners.
    """
    cells = -(-size // grid)
    scales = 1 + (torch.rand(batch, cells, device=device, dtype=torch.float64) * 2 - 1) * limit
    starts = torch.cumsum(grid * scales, dim=1) - grid * scales  # where each cell's source span begins
    position = torch.arange(size, device=device)
    cell, offset = position // grid, (position % grid).to(torch.float64)
    source = torch.floor(starts[:, cell] + offset * scales[:, cell]).long()
    source = torch.where(source < size, source, -1)
    flipped = torch.rand(batch, 1, device=device) < 0.5
    mirrored = torch.where(source.flip(1) >= 0, size - 1 - source.flip(1), -1)
    return torch.where(flipped, mirrored, source)


def grid_distortion(x: Tensor, limit: float, grid: int) -> Tensor:
    """Every image distorted independently (Algorithm 1, lines 10–21); pixels read from outside are 0."""
    batch, _, height, width = x.shape
    rows = distorted_axis(height, batch, limit, grid, x.device)
    cols = distorted_axis(width, batch, limit, grid, x.device)
    return remap(x, rows, cols, fill=0.0)


class DCTDistortion(InputTransform):
    """g(x) = distort(quantize(x, Q)) with distortion limit δ and grid d (the paper: δ = 0.25, d = 8).

    `table` is a file written by `python -m preempt.commands.learn_quantization` (Algorithm 2);
    without one, Feature Distillation's table is used.
    """

    differentiable = False
    random = True

    @validate_call
    def __init__(
        self, table: str | None = None, distortion_limit: DistortionLimit = 0.25, grid_size: AtLeastOne = 8
    ) -> None:
        self.table_path = table
        self.table = quantization_table(table)
        self.distortion_limit = distortion_limit
        self.grid_size = grid_size

    def transform(self, x: Tensor) -> Tensor:
        return grid_distortion(quantize(x, self.table), self.distortion_limit, self.grid_size)
