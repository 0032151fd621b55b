"""Real JPEG (libjpeg through Pillow): the JPEG defense of Guo et al., and the codec SHIELD builds on."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Annotated

import numpy as np
import torch
from annotated_types import Ge, Le
from PIL import Image
from pydantic import validate_call
from torch import Tensor

from preempt.parts import InputTransform
from preempt.threat import LEVELS, to_levels

Quality = Annotated[int, Ge(1), Le(100)]


def to_uint8_images(x: Tensor) -> np.ndarray:
    """(B, C, H, W) in [0,1] → (B, H, W, C) uint8, rounded as a saved PNG would be."""
    return to_levels(x.detach()).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def from_uint8_images(pixels: np.ndarray, like: Tensor) -> Tensor:
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).to(device=like.device, dtype=like.dtype) / LEVELS


def jpeg_round_trip(x: Tensor, qualities: Sequence[int]) -> Tensor:
    """Each image encoded and decoded by libjpeg at each quality: (len(qualities), B, C, H, W) in [0,1].

    Pillow's defaults otherwise (4:2:0 chroma subsampling for color, baseline). The codec works on one image at
    a time, so this loops over images, never over pixels.
    """
    pixels = to_uint8_images(x)
    decoded = np.empty((len(qualities), *pixels.shape), dtype=np.uint8)
    for i, image in enumerate(pixels):
        source = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        for q, quality in enumerate(qualities):
            buffer = io.BytesIO()
            source.save(buffer, format="JPEG", quality=quality)
            buffer.seek(0)
            decoded[q, i] = np.asarray(Image.open(buffer)).reshape(image.shape)
    return torch.stack([from_uint8_images(batch, like=x) for batch in decoded])


class JPEG(InputTransform):
    """JPEG compression at `quality` (Guo et al. used 75): removes the high-frequency detail perturbations need.

    BPDA passes all of g straight through (`approximated`'s default): libjpeg has no stage autograd can follow."""

    differentiable = False
    random = False

    @validate_call
    def __init__(self, quality: Quality = 75) -> None:
        self.quality = quality

    def transform(self, x: Tensor) -> Tensor:
        return jpeg_round_trip(x, [self.quality])[0]
