"""Random resizing and padding (Rand; Xie et al. 2018), with the sizes scaled to keep the image's shape."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from preempt.parts import InputTransform
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


class RandomResizePad(InputTransform):
    """Nearest-neighbour resize to a random side in [310/331, 330/331] of the original, then mid-gray padding.

    The size and the offset inside the canvas are drawn per image. The output keeps the input's shape: Xie et
    al.'s canvas is 331 for a 299 input, here the canvas is the input's own size and the resized image is
    correspondingly smaller. Differentiable: each output pixel copies one input pixel or is padding.
    """

    differentiable = True
    random = True

    def transform(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        low = min(max(math.ceil(height * SMALLEST), 1), height)
        high = max(min(math.floor(height * LARGEST), height - 1), low)
        resized_h = torch.randint(low, high + 1, (batch,), device=x.device)
        resized_w = torch.round(resized_h * (width / height)).long().clamp(1, width)
        top = (torch.rand(batch, device=x.device) * (height - resized_h + 1)).long()
        left = (torch.rand(batch, device=x.device) * (width - resized_w + 1)).long()
        rows = resize_pad_indices(height, resized_h, top)
        cols = resize_pad_indices(width, resized_w, left)
        return remap(x, rows, cols, fill=PAD_VALUE)
