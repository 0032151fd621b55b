"""Pixel deflection: each deflected channel-pixel copies a neighbour within the window; the denoiser is skimage's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.restoration import denoise_wavelet

from preempt.receiver_defenses.pixel_deflection import PixelDeflection, deflect, wavelet_denoise


def unique_ids(batch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """float64 images whose every channel-pixel holds its own id, so a copied value names its source."""
    n = channels * height * width
    return torch.arange(n, dtype=torch.float64).reshape(1, channels, height, width).expand(batch, -1, -1, -1) / n


@pytest.mark.parametrize(("deflections", "window"), [(200, 3), (50, 10), (7, 1)])
def test_deflection_copies_the_same_channel_from_within_the_window(deflections: int, window: int) -> None:
    batch, channels, height, width = 6, 3, 32, 32
    x = unique_ids(batch, channels, height, width).contiguous()
    torch.manual_seed(0)
    out = deflect(x, deflections, window)
    changed = out != x
    per_image = changed.flatten(1).sum(1)
    assert (per_image <= deflections).all(), per_image
    assert per_image.sum() > 0.5 * batch * deflections, "most deflections must change a pixel"
    image, channel, row, col = changed.nonzero().unbind(1)
    source = torch.round(out[image, channel, row, col] * channels * height * width).long()
    source_channel, rest = source // (height * width), source % (height * width)
    source_row, source_col = rest // width, rest % width
    assert torch.equal(source_channel, channel), "a deflection copies from the same channel"
    assert ((source_row - row).abs() <= window).all() and ((source_col - col).abs() <= window).all()
    # The deflections go through the channels in turn.
    per_channel = changed.sum((0, 2, 3))
    assert (per_channel <= batch * -(-deflections // channels)).all() and (per_channel > 0).all()


def test_deflection_leaves_its_input_alone_and_reaches_the_window_edges() -> None:
    x = unique_ids(64, 1, 16, 16).contiguous()
    before = x.clone()
    torch.manual_seed(0)
    out = deflect(x, 40, 2)
    assert torch.equal(x, before)
    _, _, row, col = (out != x).nonzero().unbind(1)
    source = torch.round(out[out != x] * 256).long()
    offsets = torch.stack([source // 16 - row, source % 16 - col], 1)
    assert offsets.abs().max() == 2, "the window's edge is reachable"


@pytest.mark.parametrize("channels", [3, 1])
def test_wavelet_denoise_is_skimages_denoise_wavelet_with_the_authors_arguments(channels: int) -> None:
    torch.manual_seed(0)
    x = (0.5 + 0.2 * torch.randn(1, channels, 32, 32, dtype=torch.float64)).clamp(0, 1)
    ours = wavelet_denoise(x, sigma=0.04)
    image = x[0].permute(1, 2, 0).numpy()
    if channels == 3:
        args = {"convert2ycbcr": True, "channel_axis": -1}
    else:
        image, args = image[..., 0], {"convert2ycbcr": False, "channel_axis": None}
    expected = denoise_wavelet(
        image, sigma=0.04, mode="soft", method="BayesShrink", wavelet="db1", rescale_sigma=True, **args
    )
    expected = torch.from_numpy(np.clip(expected.reshape(32, 32, channels), 0, 1)).permute(2, 0, 1)
    torch.testing.assert_close(ours[0], expected, rtol=0, atol=1e-12)
    assert not torch.equal(ours, x)


@pytest.mark.parametrize("channels", [1, 3])
def test_wavelet_denoise_removes_part_of_sigma_004_noise(channels: int, cifar_batch) -> None:
    clean = cifar_batch[0][:4].double()
    clean = clean if channels == 3 else clean.mean(1, keepdim=True)
    torch.manual_seed(0)
    noisy = (clean + 0.04 * torch.randn_like(clean)).clamp(0, 1)
    before = (noisy - clean).abs().mean().item()
    after = (wavelet_denoise(noisy, sigma=0.04) - clean).abs().mean().item()
    assert after < 0.95 * before, (before, after)


def test_the_defaults_are_the_authors_settings() -> None:
    transform = PixelDeflection()
    assert (transform.deflections, transform.window, transform.sigma) == (200, 10, 0.04)
