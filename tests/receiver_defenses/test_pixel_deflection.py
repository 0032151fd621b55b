"""Pixel deflection: each deflected channel-pixel copies a neighbour within the window; the denoiser is skimage's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.restoration import denoise_wavelet

from preempt.parts import NonDifferentiableTransformError
from preempt.receiver_defenses import ReceiverDefended
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


def authors_setting(deflections: int = 600) -> PixelDeflection:
    """The second paper's code's setting (pixel_deflection_qiu2020.yaml): no denoiser, counted per channel."""
    return PixelDeflection(deflections=deflections, window=10, sigma=None, per_channel=True)


def test_per_channel_deflects_that_many_values_in_every_channel_at_independent_positions() -> None:
    batch, channels, side, deflections = 8, 3, 64, 100
    x = unique_ids(batch, channels, side, side).contiguous()
    torch.manual_seed(0)
    changed = authors_setting(deflections).transform(x) != x
    per_channel = changed.sum((2, 3))
    assert (per_channel <= deflections).all() and (per_channel > 0.9 * deflections).all(), per_channel
    torch.manual_seed(0)
    in_all = (PixelDeflection(deflections=deflections, sigma=None).transform(x) != x).sum((1, 2, 3))
    assert (in_all <= deflections).all(), "per_channel=false counts the values of all channels together"
    # Not whole pixels: the authors' loop draws a new position for each channel.
    whole = changed.all(1).sum().item()
    assert whole < 0.1 * changed.any(1).sum().item(), whole


def test_without_denoiser_untouched_values_stay_exact_and_moved_ones_are_copies() -> None:
    x = unique_ids(4, 3, 32, 32).contiguous()
    torch.manual_seed(0)
    out = authors_setting(50).transform(x)
    changed = out != x
    assert changed.any() and torch.equal(out[~changed], x[~changed])
    assert torch.isin(out, x).all(), "every output value is a copy of an input value"
    assert not torch.equal(PixelDeflection(deflections=50).transform(x)[~changed], x[~changed]), "the denoiser would"


def test_without_denoiser_gradients_count_copies_even_where_positions_repeat(cifar_batch) -> None:
    # 600 deflections per channel on 32×32 images: many positions are drawn twice; each keeps one copy.
    x = cifar_batch[0][:4].double().requires_grad_(True)
    transform = authors_setting()
    assert transform.differentiable and not PixelDeflection().differentiable
    torch.manual_seed(0)
    out = transform.transform(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad, grad.round()) and (grad >= 0).all()
    assert grad.sum().item() == x.numel(), "each output value copies exactly one input value"
    victim = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)).double()
    (through,) = torch.autograd.grad(ReceiverDefended(victim, transform)(x).sum(), x)
    assert through.abs().sum() > 0
    with pytest.raises(NonDifferentiableTransformError):
        ReceiverDefended(victim, PixelDeflection())(x)


def test_partial_bpda_differentiates_the_deflection_and_passes_the_denoiser_straight_through(cifar_batch) -> None:
    """∇ₓ Σ w·g(x) through `approximated` is the deflection's own gradient (each copy carries its weight back to
    its source), for the draw that gave the value (`transform`'s under the same seed): not the identity."""
    transform = PixelDeflection()
    x = cifar_batch[0][:2].clone().requires_grad_(True)
    weights = torch.randn_like(x)
    torch.manual_seed(5)
    value = transform.approximated(x)
    (grad,) = torch.autograd.grad((weights * value).sum(), x)
    torch.manual_seed(5)
    torch.testing.assert_close(value, transform.transform(x.detach()))
    torch.manual_seed(5)
    (expected,) = torch.autograd.grad((weights * deflect(x, transform.deflections, transform.window)).sum(), x)
    torch.testing.assert_close(grad, expected)
    assert not torch.allclose(grad, weights)
