"""A learned differentiable stand-in for a receiver-side transform g: the backward pass of the adaptive BPDA attack.

BPDA (Athalye et al. 2018) runs the forward pass through g and the backward pass through an approximation of it;
the naive approximation is the identity. Raff et al. (2019), and the preprocessing-defense paper after them, fit
a small DenseNet auto-encoder to g instead and report how close it gets (normalized L2 and SSIM against g's output).
The project trains it once per g, training images and recipe (`preempt.zoo.approximators`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.image import structural_similarity_index_measure

from preempt.parts import InputTransform
from preempt.threat import distance


class DenseAutoEncoder(nn.Module):
    """`layers` 3×3 convolutions, each fed the input and every earlier layer's output (DenseNet's concatenation),
    then a 1×1 convolution to a shift s = tanh(·) in (−1,1) per pixel and channel that moves the pixel the
    fraction s of the way to white (s > 0) or −s of the way to black (s < 0).

    Why this output: for x in [0,1] it stays in [0,1] without squashing x itself, and it is continuous and
    piecewise smooth, like the ReLUs inside, so BPDA always gets a gradient. A squashed residual (sigmoid or
    soft clamp of x + r) reaches 0 or 1, where many pixels of real images sit, only where its slope is nearly
    flat: BPDA's gradients would vanish there, and training falls into that flat region (an AE of sigmoid
    fractions collapsed to the exact identity on bit-depth reduction). Here the identity is s = 0, tanh's
    linear middle; the last convolution starts at zero, so the untrained AE is the identity (the naive BPDA
    approximation). Fully convolutional with same-size padding, so it takes images of any size; no
    downsampling, since g's details are pixel-sized.
    """

    def __init__(self, channels: int, layers: int = 6, growth: int = 16) -> None:
        super().__init__()
        self.dense = nn.ModuleList(
            nn.Conv2d(channels + i * growth, growth, kernel_size=3, padding=1) for i in range(layers)
        )
        self.shift = nn.Conv2d(channels + layers * growth, channels, kernel_size=1)
        nn.init.zeros_(self.shift.weight)
        nn.init.zeros_(self.shift.bias)

    def forward(self, x: Tensor) -> Tensor:
        features = x
        for conv in self.dense:
            features = torch.cat([features, F.relu(conv(features))], dim=1)
        shift = torch.tanh(self.shift(features))
        return x + shift * torch.where(shift >= 0, 1 - x, x)


def approximation_fidelity(
    approximator: Callable[[Tensor], Tensor], transform: InputTransform, images: Tensor
) -> dict[str, float]:
    """Mean over the images of ‖AE(x) − g(x)‖₂ / ‖g(x)‖₂ and of SSIM(AE(x), g(x)), the paper's two figures (its
    Figure 4: 0.22 and 0.35 on one ImageNet image; 0.16 and 0.36 over 100). The L2 distance is relative to g(x),
    the image the approximation should reproduce, as threat's normalized_L2 is. A random g is drawn once per image."""
    with torch.no_grad():
        approximated, transformed = approximator(images), transform(images)
    ssim = structural_similarity_index_measure(approximated, transformed, data_range=1.0, reduction="none")
    return {
        "normalized_l2": distance(approximated, transformed, "normalized_L2").mean().item(),
        "ssim": ssim.mean().item(),
    }
