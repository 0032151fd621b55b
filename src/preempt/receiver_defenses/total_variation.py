"""Total variation minimization (TV; Guo et al. 2018): drop pixels at random, rebuild the image by TV."""

from __future__ import annotations

import math
from typing import Annotated

import torch
from annotated_types import Ge, Gt, Lt
from pydantic import validate_call
from torch import Tensor

from preempt.parts import InputTransform
from preempt.parts.constraints import AtLeastOne


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


def masked_tv_reconstruction(image: Tensor, kept: Tensor, weight: float, iterations: int) -> Tensor:
    """argmin_z ½·Σ kept·(z − image)² + weight·TV(z), isotropic TV, every channel of every image at once.

    Chambolle–Pock primal-dual iterations (step sizes τ = σ = 1/√8, the bound of ‖∇‖): dropped pixels have
    no data term, so they are filled in from their neighbours. They start at the mean of the kept pixels of
    their channel, so nothing of their dropped values leaks into the result.
    """
    step = 0.99 / math.sqrt(8)
    kept_mean = (kept * image).sum(dim=(-2, -1), keepdim=True) / kept.sum(dim=(-2, -1), keepdim=True).clamp_min(1)
    z = kept * image + (1 - kept) * kept_mean
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


class TotalVariation(InputTransform):
    """Keep each pixel with probability 1 − drop_rate, then minimize TV subject to the kept pixels.

    Guo et al.'s settings: drop rate 0.5, the mask drawn per pixel and per channel, TV weight 0.03 and
    isotropic TV (their split-Bregman solver; this one is primal-dual and batched, checked against
    scikit-image on the mask-free problem).
    """

    differentiable = False
    random = True

    @validate_call
    def __init__(
        self,
        drop_rate: Annotated[float, Ge(0), Lt(1)] = 0.5,
        weight: Annotated[float, Gt(0)] = 0.03,
        iterations: AtLeastOne = 100,
    ) -> None:
        self.drop_rate = drop_rate
        self.weight = weight
        self.iterations = iterations

    def transform(self, x: Tensor) -> Tensor:
        kept = (torch.rand_like(x) >= self.drop_rate).to(x.dtype)
        return masked_tv_reconstruction(x, kept, self.weight, self.iterations).clamp(0, 1)
