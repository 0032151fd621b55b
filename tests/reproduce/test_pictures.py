"""Figures 4 and 5 of the Fast Preemption paper: Eq. 14's δ_Gray by hand, and Figure 5's similarity telling two
runs of one defense from an unrelated sign pattern."""

from pathlib import Path

import pytest
import torch

from preempt.reproduce.pictures import (
    REVERSIONS,
    composed,
    first_images,
    luma,
    ntsc_gray,
    perturbation_similarity,
    prepared,
    protect,
)


def test_ntsc_gray_by_hand() -> None:
    eps = 0.1
    # (C=3, H=1, W=2): pixel 0 is R at +ε, G at 0, B at −ε; pixel 1 is R at −ε, G at ε/2, B at +ε.
    delta = torch.tensor([[[0.1, -0.1]], [[0.0, 0.05]], [[-0.1, 0.1]]])
    expected = torch.tensor([[0.299 * 1 + 0.587 * 0.5 + 0.114 * 0, 0.299 * 0 + 0.587 * 0.75 + 0.114 * 1]])
    torch.testing.assert_close(ntsc_gray(delta, eps), expected)
    torch.testing.assert_close(ntsc_gray(delta[None], eps), expected[None])  # batched
    gray = torch.tensor([[[[-0.1, 0.0, 0.05]]]])  # one channel: δ_RGB itself
    torch.testing.assert_close(ntsc_gray(gray, eps), torch.tensor([[[0.0, 0.5, 0.75]]]))


@pytest.mark.parametrize("channels", [1, 3])
def test_ntsc_gray_maps_the_budget_to_0_1(channels: int) -> None:
    eps = 8 / 255
    delta = (torch.rand(16, channels, 8, 8) * 2 - 1) * eps
    gray = ntsc_gray(delta, eps)
    assert gray.shape == (16, 8, 8)
    assert gray.min() >= 0 and gray.max() <= 1
    full = torch.full((1, channels, 2, 2), eps)
    torch.testing.assert_close(ntsc_gray(full, eps), torch.ones(1, 2, 2))
    torch.testing.assert_close(ntsc_gray(-full, eps), torch.zeros(1, 2, 2))


def test_luma_is_figure_7s_gray_original() -> None:
    """The gray an image is compared with in Figure 7: NTSC luma, and a 1-channel image itself."""
    image = torch.tensor([[[1.0, 0.0]], [[0.5, 0.0]], [[0.0, 1.0]]])
    torch.testing.assert_close(luma(image), torch.tensor([[0.299 + 0.587 * 0.5, 0.114]]))
    gray = torch.rand(2, 1, 4, 4)
    assert torch.equal(luma(gray), gray[:, 0])


def test_ntsc_gray_refuses_other_channel_counts() -> None:
    with pytest.raises(ValueError, match="1 or 3 channels"):
        ntsc_gray(torch.zeros(1, 2, 4, 4), 0.1)


def test_similarity_of_equal_opposite_and_sparse_perturbations() -> None:
    delta = torch.tensor([[0.2, -0.2, 0.0, 0.1]])
    same, opposite = perturbation_similarity(delta, delta), perturbation_similarity(delta, -delta)
    torch.testing.assert_close(same["cosine"], torch.tensor([1.0]))
    torch.testing.assert_close(same["sign_agreement"], torch.tensor([1.0]))
    torch.testing.assert_close(opposite["cosine"], torch.tensor([-1.0]))
    torch.testing.assert_close(opposite["sign_agreement"], torch.tensor([0.0]))
    # Only pixels both move count for the signs: one of the two that both move agrees.
    other = torch.tensor([[0.2, 0.2, 0.2, 0.0]])
    torch.testing.assert_close(perturbation_similarity(delta, other)["sign_agreement"], torch.tensor([0.5]))


def test_two_runs_agree_and_a_random_sign_pattern_does_not(tmp_path: Path, zoo_dir: Path) -> None:
    """Figure 5's claim, measured: two seeds of one defense move the pixels alike; an unrelated ±ε pattern does
    not (cosine about 0, about half of the signs)."""
    with composed([f"paths.cache_dir={zoo_dir}"], tmp_path) as configs:
        modules, dataset = prepared(configs, n_images=8)
    sender = modules[REVERSIONS[0]]
    x, y, index = first_images(dataset, 8, sender.device)
    _, first = protect(sender, x, y, index, seed=0)
    _, second = protect(sender, x, y, index, seed=1)
    two_runs = perturbation_similarity(first - x, second - x)
    assert two_runs["cosine"].mean() > 0.5 and two_runs["sign_agreement"].mean() > 0.75
    random_signs = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(0)) * 0.4 - 0.2
    unrelated = perturbation_similarity(first - x, random_signs)
    assert unrelated["cosine"].mean().abs() < 0.1
    assert (unrelated["sign_agreement"].mean() - 0.5).abs() < 0.1
