"""Random crop and rescale: a full crop is the identity, a crop is the bilinear resize of a window, gradients flow."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from preempt.receiver_defenses.random_crop import SECOND_PAPER_CROP, RandomCrop


def edge_margin(crop: int, size: int) -> int:
    """Output rows (or columns) at each end whose half-pixel-center source lies less than half a pixel inside the
    crop: there bilinear interpolation blends in a pixel next to the crop."""
    return sum(1 for j in range(size) if (j + 0.5) * crop / size < 0.5)


def resized_windows(image: torch.Tensor, crop: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Every crop×crop window of `image` (C, H, W), each resized back to H×W by bilinear interpolation."""
    _, height, width = image.shape
    offsets = [(top, left) for top in range(height - crop + 1) for left in range(width - crop + 1)]
    windows = torch.stack([image[:, top : top + crop, left : left + crop] for top, left in offsets])
    return F.interpolate(windows, size=(height, width), mode="bilinear", align_corners=False), offsets


def test_a_full_crop_returns_the_input(cifar_batch) -> None:
    x = cifar_batch[0]
    torch.manual_seed(0)
    torch.testing.assert_close(RandomCrop(crop_fraction=1).transform(x), x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_crop_is_the_bilinear_resize_of_one_window(seed: int, cifar_batch) -> None:
    image = cifar_batch[0][seed : seed + 1].double()
    size = image.shape[-1]
    crop = int(size * SECOND_PAPER_CROP)
    torch.manual_seed(seed)
    out = RandomCrop().transform(image)[0]
    candidates, offsets = resized_windows(image[0], crop)
    m = edge_margin(crop, size)
    interior = (candidates - out)[:, :, m:-m, m:-m].abs().flatten(1).amax(1)
    ranked = interior.argsort()
    best = ranked[0].item()
    assert interior[best] < 1e-9, f"no window matches: best {offsets[best]} is {interior[best]:.3g} off"
    assert interior[ranked[1]] > 1e-3, "the matching window must be unique"
    # The window is the one the transform draws: top first, then left, uniform over the valid offsets.
    torch.manual_seed(seed)
    drawn = (torch.randint(0, size - crop + 1, (1,)).item(), torch.randint(0, size - crop + 1, (1,)).item())
    assert offsets[best] == drawn


def test_the_crops_edge_rows_read_only_the_crop(cifar_batch) -> None:
    image = cifar_batch[0][:1].double()
    size = image.shape[-1]
    crop = int(size * SECOND_PAPER_CROP)
    torch.manual_seed(0)
    out = RandomCrop().transform(image)[0]
    torch.manual_seed(0)
    top, left = (torch.randint(0, size - crop + 1, (1,)).item() for _ in range(2))
    expected = F.interpolate(
        image[:, :, top : top + crop, left : left + crop], size=(size, size), mode="bilinear", align_corners=False
    )[0]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-9)


def test_the_crop_position_is_drawn_per_image(cifar_batch) -> None:
    x = cifar_batch[0][:1].expand(8, -1, -1, -1)
    torch.manual_seed(0)
    out = RandomCrop().transform(x)
    assert len({tuple(image.flatten()[:64].tolist()) for image in out}) > 1


def test_gradients_flow_and_each_output_pixel_spreads_a_unit_weight() -> None:
    torch.manual_seed(0)
    x = (0.1 + 0.8 * torch.rand(2, 3, 32, 32, dtype=torch.float64)).requires_grad_(True)
    out = RandomCrop().transform(x)
    out.sum().backward()
    crop = int(32 * SECOND_PAPER_CROP)
    assert (x.grad >= 0).all()
    reached = (x.grad > 0).flatten(2).sum(2)
    assert (reached <= (crop + 2) ** 2).all() and (reached >= crop**2).all(), "only the crop (and its rim) is read"
    # Bilinear weights of one output pixel sum to 1, so the gradients add up to the number of output pixels.
    torch.testing.assert_close(x.grad.sum(), torch.tensor(float(x.numel()), dtype=torch.float64))


def test_the_second_papers_crop_is_90_of_299_pixels() -> None:
    assert math.isclose(SECOND_PAPER_CROP, 90 / 299)
    assert RandomCrop().crop_fraction == SECOND_PAPER_CROP
