"""The second paper's defense (Algorithm 1): 8×8 DCT quantization with a defensive table, then grid distortion.

Quantization removes the perturbation's effect where the table's steps are large (and makes g
non-differentiable); the distortion redraws every grid's size at random on each call, so no fixed
differentiable function approximates g well (the paper's Property 3).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from annotated_types import Ge, Le
from pydantic import validate_call
from torch import Tensor

from preempt.parts import ConfigError, InputTransform
from preempt.parts.constraints import AtLeastOne
from preempt.parts.transform import straight_through
from preempt.receiver_defenses.base import remap
from preempt.receiver_defenses.dct import quantize
from preempt.receiver_defenses.feature_distillation import quantization_table

DistortionLimit = Annotated[float, Ge(0), Le(1)]
SpanSampling = Literal["half_open", "both_ends"]


def distorted_axis(
    size: int,
    batch: int,
    limit: float,
    grid: int,
    device: torch.device,
    span_sampling: SpanSampling = "half_open",
) -> Tensor:
    """For each image, the source index each output row (or column) reads, or -1 where it reads outside.

    Algorithm 1, lines 10–21: d = `grid` is a cell SIZE in pixels (n_w = w/d cells). Output cells are regular
    (d pixels); output cell m reads the source span x_{m−1}:x_m that starts where the previous one ended and is
    d·(1+δ_m) long, δ_m ~ U(−limit, limit). Spans longer than a cell drop rows (compression), shorter ones
    repeat rows (stretching); the output is already the input's size (the last cell is cut where the axis
    ends, nothing is resized); what the spans leave past the image's end is dropped, and output read past it
    is padded. A random flip of the axis picks one of the four starting corners.
    `span_sampling`: "half_open" reads span m as x_{m−1}:x_m is written, each source row in one span (the
    paper's notation, as for the DCT blocks of lines 4–9); "both_ends" spreads a cell's d pixels from the
    span's first row to its last included, as the authors' code does (np.linspace), so every cell boundary row
    is read twice and each cell steps d/(d−1) further: it drops ~2× more (`distortion_footprint`).
    """
    cells = -(-size // grid)
    scales = 1 + (torch.rand(batch, cells, device=device, dtype=torch.float64) * 2 - 1) * limit
    starts = torch.cumsum(grid * scales, dim=1) - grid * scales  # where each cell's source span begins
    steps = grid * scales / (grid - 1 if span_sampling == "both_ends" else grid)
    position = torch.arange(size, device=device)
    cell, offset = position // grid, (position % grid).to(torch.float64)
    source = torch.floor(starts[:, cell] + offset * steps[:, cell]).long()
    source = torch.where(source < size, source, -1)
    flipped = torch.rand(batch, 1, device=device) < 0.5
    mirrored = torch.where(source.flip(1) >= 0, size - 1 - source.flip(1), -1)
    return torch.where(flipped, mirrored, source)


def grid_distortion(x: Tensor, limit: float, grid: int, span_sampling: SpanSampling = "half_open") -> Tensor:
    """Every image distorted independently (Algorithm 1, lines 10–21); pixels read from outside are 0."""
    batch, _, height, width = x.shape
    rows = distorted_axis(height, batch, limit, grid, x.device, span_sampling)
    cols = distorted_axis(width, batch, limit, grid, x.device, span_sampling)
    return remap(x, rows, cols, fill=0.0)


def distortion_footprint(
    height: int,
    width: int,
    draws: int,
    limit: float = 0.25,
    grid: int = 8,
    span_sampling: SpanSampling = "half_open",
) -> tuple[Tensor, Tensor]:
    """Per draw of the distortion of a height×width image: the share of its pixels no output pixel reads
    (dropped) and the share of output pixels that do not read their own coordinate (changed, padding included),
    the two figures the paper gives for δ = 0.25 on ImageNet (20–30% and > 90%). Computed from the index maps."""
    read, kept = torch.ones(draws, dtype=torch.float64), torch.ones(draws, dtype=torch.float64)
    for size in (height, width):  # the warp is separable: a pixel is read iff its row and its column are
        source = distorted_axis(size, draws, limit, grid, torch.device("cpu"), span_sampling)
        hit = torch.zeros(draws, size + 1, dtype=torch.bool).scatter_(1, source + 1, True)  # column 0: outside
        read = read * hit[:, 1:].double().mean(dim=1)
        kept = kept * (source == torch.arange(size)).double().mean(dim=1)
    return 1 - read, 1 - kept


class DCTDistortion(InputTransform):
    """g(x) = distort(quantize(x, Q)) with distortion limit δ and grid d (the paper: δ = 0.25, d = 8).

    `table` is a file written by `python -m preempt.commands.learn_quantization` (Algorithm 2);
    without one, Feature Distillation's table is used.
    """

    differentiable = False
    random = True

    @validate_call
    def __init__(
        self,
        table: str | None = None,
        distortion_limit: DistortionLimit = 0.25,
        grid_size: AtLeastOne = 8,
        span_sampling: SpanSampling = "half_open",
    ) -> None:
        if span_sampling == "both_ends" and grid_size < 2:
            raise ConfigError(
                "receiver_defense.span_sampling=both_ends spreads a cell's pixels from its span's first row to its "
                "last, which needs cells of 2 pixels or more: set grid_size ≥ 2 or span_sampling=half_open"
            )
        self.table_path = table
        self.table = quantization_table(table)
        self.distortion_limit = distortion_limit
        self.grid_size = grid_size
        self.span_sampling = span_sampling

    def transform(self, x: Tensor) -> Tensor:
        return grid_distortion(quantize(x, self.table), self.distortion_limit, self.grid_size, self.span_sampling)

    def approximated(self, x: Tensor) -> Tensor:
        """BPDA on the quantization only (the identity backward); the distortion is a pixel gather, so its
        gradient is its own transpose, from the same draw as the value."""
        quantized = straight_through(x, quantize(x, self.table))
        return grid_distortion(quantized, self.distortion_limit, self.grid_size, self.span_sampling)
