"""The project's own noise-prediction network for the digits, so DiffPure runs on every machine, offline.

A small UNet (two resolutions below the input, one residual block per level, sinusoidal time embedding), trained
by the project with the DDPM ε-prediction loss on the digits training split (`preempt.zoo.digits_score_model`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from preempt.parts.constraints import AtLeastOne
from preempt.score_models.base import NoisePredictor


def timestep_features(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal features of 1000·t (the DDPM timestep scale), so one unit of t spans many frequencies."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
    angles = 1000 * t[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class TimeConditionedBlock(nn.Module):
    """GroupNorm → SiLU → 3×3 conv, plus the time embedding as a per-channel shift, twice, with a residual."""

    def __init__(self, channels_in: int, channels_out: int, embedding_dim: int) -> None:
        super().__init__()
        self.norm_in = nn.GroupNorm(min(8, channels_in), channels_in)
        self.conv_in = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.time_shift = nn.Linear(embedding_dim, channels_out)
        self.norm_out = nn.GroupNorm(8, channels_out)
        self.conv_out = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.skip = nn.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out else nn.Identity()

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        h = self.conv_in(F.silu(self.norm_in(x))) + self.time_shift(embedding)[:, :, None, None]
        return self.skip(x) + self.conv_out(F.silu(self.norm_out(h)))


class DigitsUNet(NoisePredictor):
    """ε̂(x_t, t) for C×S×S images, S divisible by 4: blocks at S, S/2 and S/4 with skips across, `width` channels
    at full resolution and twice that below."""

    def __init__(self, channels: int = 1, image_size: int = 16, width: AtLeastOne = 32) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(f"the digits score model halves the image twice: image_size={image_size} must divide by 4")
        self.image_shape = (channels, image_size, image_size)
        self.name = f"digits_unet_{width}"
        embedding_dim = 4 * width
        self.time_features = width
        self.time_mlp = nn.Sequential(
            nn.Linear(width, embedding_dim), nn.SiLU(), nn.Linear(embedding_dim, embedding_dim)
        )
        wide = 2 * width
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.down_full = TimeConditionedBlock(width, width, embedding_dim)
        self.down_half = TimeConditionedBlock(width, wide, embedding_dim)
        self.middle = TimeConditionedBlock(wide, wide, embedding_dim)
        self.up_half = TimeConditionedBlock(2 * wide, wide, embedding_dim)
        self.up_full = TimeConditionedBlock(wide + width, width, embedding_dim)
        self.head = nn.Sequential(nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        embedding = self.time_mlp(timestep_features(t, self.time_features))
        full = self.down_full(self.stem(x), embedding)
        half = self.down_half(F.avg_pool2d(full, 2), embedding)
        middle = self.middle(F.avg_pool2d(half, 2), embedding)
        half = self.up_half(torch.cat([F.interpolate(middle, scale_factor=2.0), half], dim=1), embedding)
        full = self.up_full(torch.cat([F.interpolate(half, scale_factor=2.0), full], dim=1), embedding)
        return self.head(full)
