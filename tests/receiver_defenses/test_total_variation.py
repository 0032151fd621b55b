"""TV minimization: scikit-image's Chambolle solution when nothing is dropped; smoothing and filling otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.restoration import denoise_tv_chambolle

from preempt.receiver_defenses.total_variation import TotalVariation, divergence, gradient, masked_tv_reconstruction


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
