"""The variance-preserving diffusion DiffPure runs (Song et al.'s VP SDE, DDPM's linear β schedule).

Forward SDE dx = −½β(t)x dt + √β(t) dW on t ∈ [0,1], β(t) = β_min + t(β_max − β_min), so
x_t = √ᾱ(t)·x_0 + √(1−ᾱ(t))·ε with ᾱ(t) = exp(−½t²(β_max−β_min) − t·β_min). Its discretization over N = 1000 steps
is DDPM's schedule: β_i from β_min/N to β_max/N. DiffPure diffuses with the discrete ᾱ and solves the reverse SDE with
the continuous one; training the project's score model uses the continuous one.
"""

from __future__ import annotations

import torch
from torch import Tensor

BETA_MIN = 0.1
BETA_MAX = 20.0
DISCRETE_STEPS = 1000


def beta(t: Tensor | float) -> Tensor | float:
    return BETA_MIN + t * (BETA_MAX - BETA_MIN)


def continuous_alpha_bar(t: Tensor) -> Tensor:
    """ᾱ(t): the fraction of x_0's variance left at time t."""
    return torch.exp(-0.5 * (BETA_MAX - BETA_MIN) * t**2 - BETA_MIN * t)


def discrete_alpha_bar(steps: int) -> float:
    """ᾱ after `steps` of DDPM's 1000-step linear schedule (steps ≥ 1): what DiffPure diffuses its input with."""
    betas = torch.linspace(BETA_MIN / DISCRETE_STEPS, BETA_MAX / DISCRETE_STEPS, DISCRETE_STEPS, dtype=torch.float64)
    return float(torch.cumprod(1 - betas, dim=0)[steps - 1])
