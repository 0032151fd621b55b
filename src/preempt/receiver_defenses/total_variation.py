"""Total variation minimization (TV; Guo et al. 2018): drop pixels at random, rebuild the image by TV."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Lt
from pydantic import validate_call
from torch import Tensor

from preempt.parts import InputTransform
from preempt.parts.constraints import AtLeastOne, NonNegativeFloat
from preempt.threat import distance

Start = Literal["mean", "image"]


def gradient(z: Tensor) -> Tensor:
    """Forward differences along H and W, zero at the far edge (Neumann): (..., 2, H, W)."""
    dy = torch.zeros_like(z)
    dx = torch.zeros_like(z)
    dy[..., :-1, :] = z[..., 1:, :] - z[..., :-1, :]
    dx[..., :, :-1] = z[..., :, 1:] - z[..., :, :-1]
    return torch.stack([dy, dx], dim=-3)


def divergence(p: Tensor) -> Tensor:
    """The negative adjoint of `gradient`."""
    py, px = p.unbind(dim=-3)
    div = torch.zeros_like(py)
    div[..., :-1, :] += py[..., :-1, :]
    div[..., 1:, :] -= py[..., :-1, :]
    div[..., :, :-1] += px[..., :, :-1]
    div[..., :, 1:] -= px[..., :, :-1]
    return div


def neighbour_sum(z: Tensor) -> Tensor:
    """The sum of each pixel's 4 neighbours inside the image."""
    padded = F.pad(z, (1, 1, 1, 1))
    return padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1] + padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:]


def starting_point(image: Tensor, kept: Tensor, start: Start) -> Tensor:
    """Where the solver starts: `mean` puts dropped pixels at the mean of the kept pixels of their channel, so
    nothing of their values leaks into an unconverged result; `image` is the whole image, dropped values
    included (the second paper's code)."""
    if start == "image":
        return image
    kept_mean = (kept * image).sum(dim=(-2, -1), keepdim=True) / kept.sum(dim=(-2, -1), keepdim=True).clamp_min(1)
    return kept * image + (1 - kept) * kept_mean


def masked_tv_reconstruction(
    image: Tensor, kept: Tensor, weight: float, iterations: int, start: Start = "mean"
) -> Tensor:
    """argmin_z ½·Σ kept·(z − image)² + weight·TV(z), isotropic TV, every channel of every image at once.

    Chambolle–Pock primal-dual iterations (step sizes τ = σ = 1/√8, the bound of ‖∇‖): dropped pixels have
    no data term, so they are filled in from their neighbours, starting from `starting_point`. `kept` is 1
    where a pixel is kept, per channel or (B, 1, H, W) for all channels.
    """
    step = 0.99 / math.sqrt(8)
    z = starting_point(image, kept, start)
    z_bar = z.clone()
    dual = torch.zeros(*image.shape[:-2], 2, *image.shape[-2:], dtype=image.dtype, device=image.device)
    for _ in range(iterations):
        dual = dual + step * gradient(z_bar)
        magnitude = (dual.square().sum(dim=-3, keepdim=True)).sqrt()  # faster than Tensor.norm over dim -3 on CPU
        dual = dual / (magnitude / weight).clamp_min(1.0)
        previous = z
        z = (z + step * divergence(dual) + step * kept * image) / (1 + step * kept)
        z_bar = 2 * z - previous
    return z


def split_bregman_reconstruction(
    image: Tensor, kept: Tensor, weight: float, iterations: int, start: Start = "mean", tolerance: float = 0.0
) -> Tensor:
    """argmin_z ½·Σ kept·(z − image)² + weight·Σ (|∂y z| + |∂x z|), anisotropic TV, every channel of every image
    at once, by split Bregman (Goldstein and Osher) as the second paper's code solves it.

    With d ≈ ∇z and its Bregman variable b: one Gauss–Seidel sweep of (μ·kept + λ∇ᵀ∇) z = μ·kept·image + λ∇ᵀ(d − b)
    (in red-black order, so it is batched; theirs goes pixel by pixel), then d = shrink(∇z + b, 1/λ) and
    b += ∇z − d, with their constants μ = 1/weight and λ = 2μ. An image stops once the RMS change of its z over a
    sweep is at most `tolerance` (their rule; 0 runs all iterations). Borders are Neumann, as `gradient`'s.
    """
    fidelity, penalty = kept / weight, 2 / weight
    denominator = fidelity + penalty * neighbour_sum(torch.ones_like(image[:1, :1]))
    rows, cols = image.shape[-2:]
    checker = (torch.arange(rows, device=image.device)[:, None] + torch.arange(cols, device=image.device)) % 2
    z = starting_point(image, kept, start)
    split = torch.zeros_like(gradient(z))
    bregman = torch.zeros_like(split)
    active = torch.ones(len(image), dtype=torch.bool, device=image.device)
    for _ in range(iterations):
        previous = z
        data = fidelity * image - penalty * divergence(split - bregman)
        for colour in (0, 1):
            update = (data + penalty * neighbour_sum(z)) / denominator
            z = torch.where((checker == colour) & active[:, None, None, None], update, z)
        grad = gradient(z)
        shrunk = grad + bregman - (grad + bregman).clamp(-1 / penalty, 1 / penalty)
        moving = active[:, None, None, None, None]
        split = torch.where(moving, shrunk, split)
        bregman = torch.where(moving, bregman + grad - shrunk, bregman)
        active = active & (distance(z, previous, "RMS") > tolerance)
        if not active.any():
            break
    return z


def drop_mask(x: Tensor, drop_rate: float, shared: bool) -> Tensor:
    """1 where a value is kept: drawn per pixel and channel, or (shared) per pixel as (B, 1, H, W) for all channels."""
    return (torch.rand_like(x[:, :1] if shared else x) >= drop_rate).to(x.dtype)


class TotalVariation(InputTransform):
    """Keep each pixel with probability 1 − drop_rate, then minimize TV subject to the kept pixels.

    Guo et al.'s settings (the defaults): drop rate 0.5, the mask drawn per pixel and per channel, TV weight 0.03
    and isotropic TV (their split-Bregman solver; `solver=primal_dual` is batched, checked against scikit-image
    on the mask-free problem), starting from the kept pixels' mean.
    The second paper's code: one mask for all channels (`shared_mask`), anisotropic TV by split Bregman
    (`solver=split_bregman`, which stops early at `tolerance`), starting from the whole image (`start=image`).
    BPDA passes all of g straight through (`approximated`'s default, Athalye et al.'s choice for TV): g is an
    argmin, whose gradient backpropagating through every solver step would only approximate, at `iterations`
    times the memory; the random mask only selects its data term.
    """

    differentiable = False
    random = True

    @validate_call
    def __init__(
        self,
        drop_rate: Annotated[float, Ge(0), Lt(1)] = 0.5,
        weight: Annotated[float, Gt(0)] = 0.03,
        iterations: AtLeastOne = 100,
        shared_mask: bool = False,
        solver: Literal["primal_dual", "split_bregman"] = "primal_dual",
        start: Start = "mean",
        tolerance: NonNegativeFloat = 0.0,
    ) -> None:
        if tolerance > 0 and solver != "split_bregman":
            raise ValueError(
                f"tolerance={tolerance} stops the split Bregman solver early; the primal-dual solver always runs "
                f"`iterations` steps: set solver=split_bregman, or tolerance=0"
            )
        self.drop_rate = drop_rate
        self.weight = weight
        self.iterations = iterations
        self.shared_mask = shared_mask
        self.solver = solver
        self.start = start
        self.tolerance = tolerance

    def transform(self, x: Tensor) -> Tensor:
        kept = drop_mask(x, self.drop_rate, self.shared_mask)
        if self.solver == "split_bregman":
            z = split_bregman_reconstruction(x, kept, self.weight, self.iterations, self.start, self.tolerance)
        else:
            z = masked_tv_reconstruction(x, kept, self.weight, self.iterations, self.start)
        return z.clamp(0, 1)
