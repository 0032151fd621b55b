"""Random resize and pad on 224-pixel images: mid-gray border, inner side in Xie et al.'s range, gradients."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch
import torch.nn.functional as F
from conftest import option_node
from hydra.utils import instantiate

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


def authors_setting() -> RandomResizePad:
    """The second paper's code's setting, from its config file."""
    return instantiate(option_node("receiver_defense", "random_resize_pad_qiu2020"))


def test_the_authors_range_is_299_to_399_on_their_400_canvas() -> None:
    transform = authors_setting()
    assert transform.interpolation == "bilinear"
    # 2,000 draws on black 400×1 columns (cheap): the image part is 0, the padding mid-gray.
    torch.manual_seed(0)
    sides = (transform.transform(torch.zeros(2000, 1, 400, 1)) != PAD_VALUE).sum((1, 2, 3))
    assert (sides.min().item(), sides.max().item()) == (299, 399)
    assert sides.unique().numel() == 101, "every side in between is drawn"


@pytest.mark.parametrize("seed", [0, 1])
def test_bilinear_inner_rectangle_is_torch_s_bilinear_resize(seed: int, imagenet_batch: torch.Tensor) -> None:
    x = imagenet_batch.double()
    transform = authors_setting()
    # The same seed draws the same sizes and offsets whatever the images: find them on black images.
    torch.manual_seed(seed)
    layout = transform.transform(torch.zeros_like(x))
    torch.manual_seed(seed)
    out = transform.transform(x)
    low, high = math.ceil(SIDE * 299 / 400), math.floor(SIDE * 399 / 400)
    for image, result, plan in zip(x, out, layout, strict=True):
        top, bottom, left, right = inner_rectangle(plan)
        assert low <= bottom - top <= high and bottom - top == right - left
        border = torch.ones(SIDE, SIDE, dtype=torch.bool)
        border[top:bottom, left:right] = False
        assert (result[:, border] == PAD_VALUE).all(), "the border must be exactly mid-gray"
        expected = F.interpolate(image[None], size=(bottom - top, right - left), mode="bilinear", align_corners=False)
        torch.testing.assert_close(result[:, top:bottom, left:right], expected[0], rtol=0, atol=1e-12)


def test_bilinear_blends_pixels_where_nearest_copies_them(imagenet_batch: torch.Tensor) -> None:
    x = imagenet_batch[:2]
    for interpolation, copied in (("nearest", True), ("bilinear", False)):
        torch.manual_seed(0)
        out = RandomResizePad(interpolation=interpolation).transform(x)
        inner = out[out != PAD_VALUE]
        in_input = torch.isin(inner, x).float().mean().item()
        assert in_input == 1.0 if copied else in_input < 0.5, (interpolation, in_input)


def test_bilinear_gradients_are_the_blending_weights(imagenet_batch: torch.Tensor) -> None:
    x = imagenet_batch.double().requires_grad_(True)
    torch.manual_seed(0)
    out = authors_setting().transform(x)
    out.sum().backward()
    for grad, result in zip(x.grad, out.detach(), strict=True):
        top, bottom, left, right = inner_rectangle(result)
        assert (grad >= 0).all() and not torch.equal(grad, grad.round()), "weights, not copy counts"
        torch.testing.assert_close(grad.sum().item(), 3.0 * (bottom - top) * (right - left))


def test_a_smallest_above_largest_is_refused() -> None:
    with pytest.raises(ValueError, match=r"smallest=0\.9 is above largest=0\.8"):
        RandomResizePad(smallest=0.9, largest=0.8)
    with pytest.raises(pydantic.ValidationError, match="interpolation"):
        RandomResizePad(interpolation="bicubic")
