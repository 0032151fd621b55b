"""DCT quantization + grid distortion: δ=0 is Feature Distillation, and how many pixels δ=0.25 drops and moves."""

from __future__ import annotations

import pytest
import torch

from preempt.receiver_defenses.dct_distortion import DCTDistortion, distorted_axis, grid_distortion
from preempt.receiver_defenses.feature_distillation import FeatureDistillation

SIDE = 224


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread keeps the 224×224 gathers fast when the shared machine's other core is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pixel_ids(batch: int) -> torch.Tensor:
    """(batch, 3, 224, 224) float64 images whose every channel-pixel holds its own id 1..3·224² (0 = padding)."""
    ids = torch.arange(1, 3 * SIDE * SIDE + 1, dtype=torch.float64).reshape(1, 3, SIDE, SIDE)
    return ids.expand(batch, -1, -1, -1).contiguous()


def dropped_and_moved(x: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: the share of source ids missing from the output, and the share of output pixels that do not
    hold their own id (moved, or padding)."""
    dropped = []
    for image in out:
        present = torch.zeros(x[0].numel() + 1, dtype=torch.bool)
        present[image.long().flatten()] = True
        dropped.append(1 - present[1:].double().mean())
    moved = (out != x).flatten(1).double().mean(1)
    return torch.stack(dropped), moved


def test_zero_distortion_is_feature_distillation_whatever_corner_is_drawn(cifar_batch) -> None:
    x = cifar_batch[0]
    expected = FeatureDistillation().transform(x)
    for seed in range(4):
        torch.manual_seed(seed)
        assert torch.equal(DCTDistortion(distortion_limit=0).transform(x), expected)
    torch.manual_seed(0)
    assert not torch.equal(DCTDistortion().transform(x), expected), "δ=0.25 must distort"


def test_zero_distortion_drops_and_moves_nothing() -> None:
    x = pixel_ids(4)
    torch.manual_seed(0)
    out = grid_distortion(x, 0.0, 8)
    dropped, moved = dropped_and_moved(x, out)
    assert dropped.max() == 0 and moved.max() == 0


def test_each_axis_reads_inside_the_image_or_pads() -> None:
    torch.manual_seed(0)
    source = distorted_axis(SIDE, 16, 0.25, 8, torch.device("cpu"))
    assert source.shape == (16, SIDE)
    assert source.min() >= -1 and source.max() < SIDE
    inside = source[source >= 0]
    assert inside.numel() > 0.9 * source.numel()


def test_a_quarter_distortion_moves_almost_every_pixel_and_drops_about_an_eighth() -> None:
    # Per axis, an output cell with δ > 0 reads d·(1+δ) source rows into d output rows, so it drops about d·δ of
    # them; cells with δ < 0 repeat rows instead. With δ ~ U(−0.25, 0.25) the expected dropped share per axis is
    # E[max(δ, 0)] = 0.25/4 = 6.25%, so over both axes about 1 − (1 − 0.0625)² ≈ 12%. Measured over these 32
    # images: ~13% dropped (per image 10–17%) and ~99% moved (per image ≥ 93%). The paper reports 20–30%
    # dropped and > 90% moved on ImageNet-sized images: our moved share agrees, our dropped share is lower.
    dropped, moved = [], []
    for seed in range(8):
        torch.manual_seed(seed)
        x = pixel_ids(4)
        d, m = dropped_and_moved(x, grid_distortion(x, 0.25, 8))
        dropped.append(d)
        moved.append(m)
    dropped, moved = torch.cat(dropped), torch.cat(moved)
    summary = (
        f"dropped mean {dropped.mean():.3f} (min {dropped.min():.3f}, max {dropped.max():.3f}); "
        f"moved mean {moved.mean():.3f} (min {moved.min():.3f})"
    )
    assert moved.mean() > 0.9, summary
    assert 0.05 < dropped.mean() < 0.25, summary
    assert dropped.max() < 0.3, summary


def test_the_distortion_is_drawn_per_image() -> None:
    torch.manual_seed(0)
    out = grid_distortion(pixel_ids(2), 0.25, 8)
    assert not torch.equal(out[0], out[1])
