"""TV minimization: scikit-image's Chambolle solution when nothing is dropped; smoothing and filling otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.restoration import denoise_tv_chambolle

from preempt.receiver_defenses.total_variation import (
    TotalVariation,
    divergence,
    drop_mask,
    gradient,
    masked_tv_reconstruction,
    split_bregman_reconstruction,
)


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP's second thread makes the hundreds of small
    primal-dual steps hundreds of times slower whenever the other core is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV of each image (sum of absolute neighbour differences)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().sum((-3, -2, -1)) + (x[..., 1:] - x[..., :-1]).abs().sum((-3, -2, -1))


def test_divergence_is_the_negative_adjoint_of_gradient() -> None:
    torch.manual_seed(0)
    z = torch.rand(2, 3, 7, 9, dtype=torch.float64)
    p = torch.rand(2, 3, 2, 7, 9, dtype=torch.float64)
    assert gradient(z).shape == p.shape
    torch.testing.assert_close((gradient(z) * p).sum(), -(z * divergence(p)).sum(), rtol=1e-12, atol=1e-12)


def test_without_dropped_pixels_the_result_is_scikit_images_chambolle(cifar_batch) -> None:
    x = cifar_batch[0]
    ours = masked_tv_reconstruction(x, torch.ones_like(x), 0.03, iterations=300).double()
    reference = np.stack(
        [
            [denoise_tv_chambolle(channel, weight=0.03, max_num_iter=2000, eps=1e-8) for channel in image]
            for image in x.double().numpy()
        ]
    )
    difference = (ours - torch.from_numpy(reference)).abs()
    assert difference.mean() < 3e-4 and difference.max() < 1e-2, (difference.mean().item(), difference.max().item())
    assert (x.double() - torch.from_numpy(reference)).abs().mean() > 1e-2, "the denoising must change the images"


def test_dropping_pixels_gives_a_smoother_image(cifar_batch) -> None:
    x = cifar_batch[0]
    torch.manual_seed(0)
    out = TotalVariation().transform(x)
    assert (total_variation(out) < 0.8 * total_variation(x)).all()


def test_dropped_pixels_are_filled_never_left_at_zero() -> None:
    torch.manual_seed(0)
    x = 0.05 + 0.9 * torch.rand(4, 3, 16, 16)
    out = TotalVariation(drop_rate=0.5).transform(x)
    assert out.min() > 0.01


def test_a_constant_image_stays_constant_however_many_pixels_are_dropped() -> None:
    x = torch.full((2, 3, 16, 16), 0.37, dtype=torch.float64)
    torch.manual_seed(0)
    out = TotalVariation(drop_rate=0.9).transform(x)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


def test_a_dropped_outlier_is_rebuilt_from_its_neighbours_while_a_kept_one_survives() -> None:
    x = torch.full((1, 1, 16, 16), 0.5, dtype=torch.float64)
    x[0, 0, 8, 8] = 1.0
    kept = torch.ones_like(x)
    assert masked_tv_reconstruction(x, kept, 0.03, iterations=100)[0, 0, 8, 8] > 0.8
    kept[0, 0, 8, 8] = 0
    assert masked_tv_reconstruction(x, kept, 0.03, iterations=100)[0, 0, 8, 8] == pytest.approx(0.5, abs=1e-3)


def test_the_rebuilt_image_hardly_depends_on_the_dropped_pixels_values(cifar_batch) -> None:
    # The solver starts from the full image, dropped pixels included; after the default 100 steps their values
    # should have been forgotten. Measured: mean 1.3e-3 over dropped pixels (max 0.08); 7e-5 after 300 steps.
    x = cifar_batch[0][:4].double()
    torch.manual_seed(0)
    kept = (torch.rand_like(x) >= 0.5).double()
    scrambled = kept * x + (1 - kept) * torch.rand_like(x)
    difference = masked_tv_reconstruction(x, kept, 0.03, 100) - masked_tv_reconstruction(scrambled, kept, 0.03, 100)
    dropped_difference = (difference.abs() * (1 - kept)).sum() / (1 - kept).sum()
    assert dropped_difference < 5e-3, dropped_difference.item()
    assert (scrambled - x).abs().mean() > 0.1, "precondition: the dropped pixels really were scrambled"


def authors_setting(**changes) -> TotalVariation:
    """The second paper's code's setting (total_variation_qiu2020.yaml)."""
    settings = {"weight": 0.015, "shared_mask": True, "solver": "split_bregman", "start": "image", "tolerance": 1e-3}
    return TotalVariation(**settings | changes)


def test_a_shared_mask_drops_the_same_pixels_in_every_channel() -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16)
    shared, separate = drop_mask(x, 0.5, shared=True), drop_mask(x, 0.5, shared=False)
    assert shared.shape == (4, 1, 16, 16) and separate.shape == x.shape
    assert 0.4 < shared.mean() < 0.6 and 0.4 < separate.mean() < 0.6
    assert not (separate == separate[:, :1]).all(), "per-channel masks differ between channels"


@pytest.mark.parametrize("solver", ["primal_dual", "split_bregman"])
def test_with_a_shared_mask_a_gray_image_stays_gray(solver: str) -> None:
    torch.manual_seed(0)
    gray = torch.rand(2, 1, 16, 16).expand(-1, 3, -1, -1)
    out = TotalVariation(shared_mask=True, solver=solver).transform(gray)
    assert torch.equal(out, out[:, :1].expand_as(out)), "the same pixels dropped in every channel"
    colored = TotalVariation(solver=solver).transform(gray)
    assert not torch.equal(colored, colored[:, :1].expand_as(colored))


@pytest.mark.parametrize(
    ("image", "kept", "weight", "expected"),
    [
        # Each row is [0.2, 0.8] with TV weight w: both move by w toward each other (while 2w < 0.6).
        ([[0.2, 0.8], [0.2, 0.8]], [[1, 1], [1, 1]], 0.05, [[0.25, 0.75], [0.25, 0.75]]),
        # A step between 3-pixel plateaus along every row: each plateau moves by w/3 (1D ROF with Neumann ends).
        ([[0.2] * 3 + [0.8] * 3] * 6, [[1] * 6] * 6, 0.3, [[0.3] * 3 + [0.7] * 3] * 6),
        # A dropped pixel between two kept 0.2s is filled with 0.2, whatever it held.
        ([[0.2, 0.9, 0.2]], [[1, 0, 1]], 0.05, [[0.2, 0.2, 0.2]]),
    ],
)
@pytest.mark.parametrize("start", ["mean", "image"])
def test_split_bregman_converges_to_the_hand_solutions(image, kept, weight, expected, start: str) -> None:
    image, kept, expected = (torch.tensor(a, dtype=torch.float64)[None, None] for a in (image, kept, expected))
    out = split_bregman_reconstruction(image, kept, weight, iterations=500, start=start)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-7)


def test_split_bregman_reduces_the_anisotropic_tv_of_a_noisy_image(cifar_batch) -> None:
    torch.manual_seed(0)
    clean = cifar_batch[0][:8].double()
    noisy = (clean + 0.1 * torch.randn_like(clean)).clamp(0, 1)
    out = authors_setting().transform(noisy)
    assert (total_variation(out) < 0.6 * total_variation(noisy)).all()
    assert (out - clean).abs().mean() < (noisy - clean).abs().mean()


def test_the_tolerance_stops_each_image_on_its_own() -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    x[1] = 0.5  # constant: the first sweep leaves it unchanged, so it stops at once
    kept = drop_mask(x, 0.5, shared=True)

    def run(images: torch.Tensor, masks: torch.Tensor, iterations: int, tolerance: float) -> torch.Tensor:
        return split_bregman_reconstruction(images, masks, 0.015, iterations, "image", tolerance)

    batched = run(x, kept, 100, 1e-3)
    for i in range(3):
        assert torch.equal(batched[i], run(x[i : i + 1], kept[i : i + 1], 100, 1e-3)[0])
    assert torch.equal(run(x, kept, 100, 10.0), run(x, kept, 1, 0.0)), "a huge tolerance stops after one sweep"
    assert not torch.equal(batched, run(x, kept, 100, 0.0)), "a tolerance of 1e-3 stops before 100 sweeps"


@pytest.mark.parametrize("solver", ["primal_dual", "split_bregman"])
def test_starting_from_the_image_lets_dropped_values_leak_and_from_the_mean_not(solver: str, cifar_batch) -> None:
    x = cifar_batch[0][:2].double()
    torch.manual_seed(0)
    kept = drop_mask(x, 0.5, shared=True)
    scrambled = kept * x + (1 - kept) * torch.rand_like(x)
    reconstruct = split_bregman_reconstruction if solver == "split_bregman" else masked_tv_reconstruction
    for start, leaks in (("mean", False), ("image", True)):
        same = torch.equal(reconstruct(x, kept, 0.015, 5, start), reconstruct(scrambled, kept, 0.015, 5, start))
        assert same is not leaks, start


def test_a_tolerance_without_split_bregman_is_refused() -> None:
    with pytest.raises(ValueError, match=r"tolerance=0\.001 stops the split Bregman solver early"):
        TotalVariation(tolerance=1e-3)
