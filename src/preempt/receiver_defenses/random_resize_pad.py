"""Random resizing and padding (Rand; Xie et al. 2018), with the sizes scaled to keep the image's shape."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from annotated_types import Gt, Le
from pydantic import validate_call
from torch import Tensor

from preempt.parts import InputTransform
from preempt.parts.transform import straight_through
from preempt.receiver_defenses.base import remap

# Xie et al. resize 299-pixel images to 310..330 pixels and pad them to 331: as fractions of the final size.
SMALLEST, LARGEST = 310 / 331, 330 / 331
# Their padding is 0 on inputs in [-1, 1], which is mid-gray.
PAD_VALUE = 0.5


def resize_pad_indices(size: int, resized: Tensor, offset: Tensor) -> Tensor:
    """Per image, the source index each output row reads after a nearest resize to `resized` placed at
    `offset`, or -1 in the padding (PyTorch's nearest rule: source = floor(target · size / resized))."""
    position = torch.arange(size, device=resized.device) - offset[:, None]
    source = torch.div(position * size, resized[:, None], rounding_mode="floor")
    return torch.where((position >= 0) & (position < resized[:, None]), source, -1)


def bilinear_taps(size: int, resized: Tensor, offset: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """Per image, the two source indices each output row blends after a bilinear resize to `resized` placed at
    `offset` (-1 in the padding) and the second one's weight: half-pixel centres clamped at the edges, as
    PyTorch's bilinear rule with align_corners=False and scikit-image's resize."""
    position = torch.arange(size, device=resized.device) - offset[:, None]
    source = ((position + 0.5).to(dtype) * (size / resized[:, None].to(dtype)) - 0.5).clamp(0, size - 1)
    first = source.floor().long()
    second = (first + 1).clamp_max(size - 1)
    outside = (position < 0) | (position >= resized[:, None])
    return first.masked_fill(outside, -1), second.masked_fill(outside, -1), source - first


def blend_along(x: Tensor, dim: int, taps: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Linear interpolation of a (B, C, H, W) batch along H (dim 2) or W (dim 3) with per-image taps."""
    first, second, weight = taps
    shape = [x.shape[0], 1, 1, 1]
    shape[dim] = -1
    take = [x.gather(dim, index.clamp_min(0).view(shape).expand(x.shape)) for index in (first, second)]
    return torch.lerp(take[0], take[1], weight.view(shape))


def bilinear_resize_pad(x: Tensor, resized_h: Tensor, resized_w: Tensor, top: Tensor, left: Tensor) -> Tensor:
    """Each image bilinearly resized to its own size and placed at its own offset, padding elsewhere."""
    _, _, height, width = x.shape
    rows = bilinear_taps(height, resized_h, top, x.dtype)
    cols = bilinear_taps(width, resized_w, left, x.dtype)
    out = blend_along(blend_along(x, 2, rows), 3, cols)
    # Rounding can put a blend of 1s an ulp above 1: clip it without zeroing the gradient there.
    out = straight_through(out, out.clamp(0, 1))
    inside = (rows[0] >= 0)[:, None, :, None] & (cols[0] >= 0)[:, None, None, :]
    return torch.where(inside, out, torch.full_like(out, PAD_VALUE))


class RandomResizePad(InputTransform):
    """Resize to a random side in [smallest, largest] of the original, then mid-gray padding.

    The size and the offset inside the canvas are drawn per image. The output keeps the input's shape: Xie et
    al.'s canvas is 331 for a 299 input, here the canvas is the input's own size and the resized image is
    correspondingly smaller. Xie et al.: 310/331..330/331, nearest; the second paper's code: 299/400..399/400,
    bilinear. Differentiable: each output pixel copies (nearest) or blends (bilinear) input pixels, or is padding.
    """

    differentiable = True
    random = True

    @validate_call
    def __init__(
        self,
        smallest: Annotated[float, Gt(0), Le(1)] = SMALLEST,
        largest: Annotated[float, Gt(0), Le(1)] = LARGEST,
        interpolation: Literal["nearest", "bilinear"] = "nearest",
    ) -> None:
        if smallest > largest:
            raise ValueError(
                f"smallest={smallest} is above largest={largest}: they bound the resized side as fractions of "
                f"the image's, so set smallest <= largest"
            )
        self.smallest, self.largest, self.interpolation = smallest, largest, interpolation

    def transform(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        low = min(max(math.ceil(height * self.smallest), 1), height)
        high = max(min(math.floor(height * self.largest), height - 1), low)
        resized_h = torch.randint(low, high + 1, (batch,), device=x.device)
        resized_w = torch.round(resized_h * (width / height)).long().clamp(1, width)
        top = (torch.rand(batch, device=x.device) * (height - resized_h + 1)).long()
        left = (torch.rand(batch, device=x.device) * (width - resized_w + 1)).long()
        if self.interpolation == "bilinear":
            return bilinear_resize_pad(x, resized_h, resized_w, top, left)
        rows = resize_pad_indices(height, resized_h, top)
        cols = resize_pad_indices(width, resized_w, left)
        return remap(x, rows, cols, fill=PAD_VALUE)
