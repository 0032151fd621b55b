"""Pixel deflection (Prakash et al. 2018): copy random pixels from random neighbours, then wavelet denoising."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
from annotated_types import Gt
from pydantic import validate_call
from torch import Tensor

from preempt.parts import InputTransform
from preempt.parts.constraints import AtLeastOne
from preempt.parts.transform import straight_through


def deflect(x: Tensor, deflections: int, window: int) -> Tensor:
    """`deflections` channel-pixels per image, spread over the channels in turn as the authors' loop does,
    each replaced by the same channel of a uniformly drawn pixel at most `window` away inside the image.

    All deflections read the undeflected image (the authors' loop reads earlier deflections; a pixel is
    rarely both a target and a source); a channel-pixel drawn twice keeps its last deflection, as in their
    loop, so every output value copies exactly one input value and autograd's gradient is exact. Targets are
    uniform: the authors' class-activation map, which spares salient pixels, needs a model of its own and is
    left out.
    """
    batch, channels, height, width = x.shape
    device = x.device
    channel = (torch.arange(deflections, device=device) % channels).expand(batch, -1)
    row = torch.randint(height, (batch, deflections), device=device)
    col = torch.randint(width, (batch, deflections), device=device)

    def neighbour(position: Tensor, size: int) -> Tensor:
        # Uniform over the offsets that stay inside: what redrawing until inside gives.
        low, high = (position - window).clamp_min(0), (position + window).clamp_max(size - 1)
        return low + (torch.rand(position.shape, device=device) * (high - low + 1)).long()

    source_row, source_col = neighbour(row, height), neighbour(col, width)
    plane = (torch.arange(batch, device=device)[:, None] * channels + channel) * height
    target = ((plane + row) * width + col).flatten()
    source = ((plane + source_row) * width + source_col).flatten()
    order = torch.arange(target.numel(), device=device)
    last = torch.full((x.numel(),), -1, device=device).scatter_reduce(0, target, order, "amax")
    kept = last[target] == order
    flat = x.reshape(-1)
    return flat.index_put((target[kept],), flat[source[kept]]).view_as(x)


def wavelet_denoise(x: Tensor, sigma: float) -> Tensor:
    """scikit-image's soft BayesShrink wavelet denoising (db1) per image, in YCbCr for color images, with the
    authors' arguments. `sigma` is on the [0,1] RGB scale: scikit-image carries it into each YCbCr channel's
    own range (without `rescale_sigma` it would divide it by that range, about 200, and barely denoise)."""
    from skimage.restoration import denoise_wavelet

    color = x.shape[1] == 3
    images = x.detach().permute(0, 2, 3, 1).cpu().double().numpy()
    denoised = np.stack(
        [
            denoise_wavelet(
                image if color else image[..., 0],
                sigma=sigma,
                mode="soft",
                method="BayesShrink",
                wavelet="db1",
                convert2ycbcr=color,
                channel_axis=-1 if color else None,
                rescale_sigma=True,
            ).reshape(image.shape)
            for image in images
        ]
    )
    return torch.from_numpy(denoised).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype).clamp(0, 1)


class PixelDeflection(InputTransform):
    """Deflection adds noise a classifier ignores but that breaks the perturbation's structure; denoising
    then removes both (authors' settings: 200 deflections, window 10, σ 0.04).

    `per_channel=false` (Prakash et al.'s code) deflects `deflections` channel-pixels in all, the channels in
    turn; `per_channel=true` (the second paper's code, whose loop counts one deflection per pass over the
    channels) deflects `deflections` in every channel, at positions drawn independently per channel.
    `sigma=null` skips the denoiser (the second paper's code): every output value is then a copy of an input
    value, so the transform is differentiable, as the nearest resize of Rand is.
    """

    differentiable = False
    random = True

    @validate_call
    def __init__(
        self,
        deflections: AtLeastOne = 200,
        window: AtLeastOne = 10,
        sigma: Annotated[float, Gt(0)] | None = 0.04,
        per_channel: bool = False,
    ) -> None:
        self.deflections = deflections
        self.window = window
        self.sigma = sigma
        self.per_channel = per_channel
        self.differentiable = sigma is None

    def transform(self, x: Tensor) -> Tensor:
        deflected = self.deflected(x)
        return deflected if self.sigma is None else wavelet_denoise(deflected, self.sigma)

    def approximated(self, x: Tensor) -> Tensor:
        """BPDA on the denoiser only (scikit-image: the identity backward); the deflection copies values, so
        autograd's gradient through it is exact, from the same draw as the value."""
        deflected = self.deflected(x)
        return deflected if self.sigma is None else straight_through(deflected, wavelet_denoise(deflected, self.sigma))

    def deflected(self, x: Tensor) -> Tensor:
        count = self.deflections * x.shape[1] if self.per_channel else self.deflections
        return deflect(x, count, self.window)
