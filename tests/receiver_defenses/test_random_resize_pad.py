"""Random resize and pad on 224-pixel images: mid-gray border, inner side in Xie et al.'s range, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from preempt.datasets.package_samples import imagenet_samples
from preempt.receiver_defenses.random_resize_pad import LARGEST, PAD_VALUE, SMALLEST, RandomResizePad

SIDE = 224
LOW, HIGH = math.ceil(SIDE * 310 / 331), math.floor(SIDE * 330 / 331)


@pytest.fixture(scope="module")
def imagenet_batch() -> torch.Tensor:
    """Four real 3×224×224 ImageNet samples (8-bit values, so none is exactly 0.5)."""
    return imagenet_samples(n_samples=4).images


def inner_rectangle(image: torch.Tensor) -> tuple[int, int, int, int]:
    """Top, bottom, left, right (exclusive) of the pixels that are not padding in any channel."""
    inside = (image != PAD_VALUE).any(0)
    rows, cols = inside.any(1).nonzero().squeeze(1), inside.any(0).nonzero().squeeze(1)
    return rows.min().item(), rows.max().item() + 1, cols.min().item(), cols.max().item() + 1


def test_the_range_matches_xie_et_al() -> None:
    assert (SMALLEST, LARGEST) == (310 / 331, 330 / 331)
    assert (LOW, HIGH) == (210, 223)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_output_is_a_resized_image_inside_a_mid_gray_border(seed: int, imagenet_batch: torch.Tensor) -> None:
    x = imagenet_batch
    assert not (x == PAD_VALUE).any(), "precondition: no input pixel equals the padding value"
    torch.manual_seed(seed)
    out = RandomResizePad().transform(x)
    for image, result in zip(x, out, strict=True):
        top, bottom, left, right = inner_rectangle(result)
        height, width = bottom - top, right - left
        assert LOW <= height <= HIGH and LOW <= width <= HIGH, (height, width)
        assert height == width, "a square image stays square"
        border = torch.ones(SIDE, SIDE, dtype=torch.bool)
        border[top:bottom, left:right] = False
        assert border.sum() > 0
        assert (result[:, border] == PAD_VALUE).all(), "the border must be exactly mid-gray"
        inner = result[:, top:bottom, left:right]
        assert not (inner == PAD_VALUE).any(), "the inner rectangle holds image pixels only"
        # PyTorch's nearest rule (source = floor(target · 224 / side)), as documented.
        expected = F.interpolate(image[None], size=(height, width), mode="nearest")[0]
        assert torch.equal(inner, expected)


def test_sizes_and_positions_are_drawn_per_image(imagenet_batch: torch.Tensor) -> None:
    torch.manual_seed(0)
    out = RandomResizePad().transform(imagenet_batch.repeat(4, 1, 1, 1)[:16])
    rectangles = {inner_rectangle(image) for image in out}
    assert len(rectangles) > 1


def test_gradients_count_how_often_each_input_pixel_is_copied(imagenet_batch: torch.Tensor) -> None:
    x = imagenet_batch.double().requires_grad_(True)
    torch.manual_seed(0)
    out = RandomResizePad().transform(x)
    out.sum().backward()
    grad = x.grad
    assert grad.abs().sum() > 0, "RandomResizePad is declared differentiable"
    assert (grad >= 0).all() and torch.equal(grad, grad.round()), "every gradient is a copy count"
    for image, result in zip(grad, out.detach(), strict=True):
        top, bottom, left, right = inner_rectangle(result)
        assert image.sum().item() == 3 * (bottom - top) * (right - left), "each inner pixel copies one input pixel"
        assert image.amax().item() <= 1, "shrinking never copies an input pixel twice"
