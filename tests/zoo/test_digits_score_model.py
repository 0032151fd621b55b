"""The digits score model as the project trains it: deterministic, cached by recipe, and it learned the noise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from preempt.score_models.vp import continuous_alpha_bar
from preempt.zoo.digits_score_model import (
    ScoreModelRecipe,
    denoising_loss,
    load_or_train_digits_score_model,
    score_model_path,
    train_digits_score_model,
)


def test_training_is_deterministic_and_the_cache_is_keyed_by_the_recipe(tmp_path) -> None:
    tiny = {"width": 8, "steps": 3, "batch_size": 8}
    first = load_or_train_digits_score_model(str(tmp_path), **tiny)
    again = load_or_train_digits_score_model(str(tmp_path), **tiny)  # from the cache
    retrained = train_digits_score_model(
        torch.rand(20, 1, 16, 16), ScoreModelRecipe(**tiny)
    )  # other images: other weights
    assert score_model_path(ScoreModelRecipe(**tiny), tmp_path).is_file()
    assert score_model_path(ScoreModelRecipe(**tiny), tmp_path) != score_model_path(
        ScoreModelRecipe(**tiny, seed=1), tmp_path
    )
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True))
    assert not all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), retrained.state_dict().values(), strict=True)
    )
    assert not first.training and not any(p.requires_grad for p in first.parameters())


@pytest.mark.slow
def test_the_trained_model_predicts_the_noise_far_better_than_zero(digits_score_model: nn.Module, digits_batch) -> None:
    """ε̂ = 0 scores E‖ε‖²/d = 1; the trained model must explain most of the noise at the times DiffPure uses."""
    x, _ = digits_batch
    torch.manual_seed(0)
    for t in (0.1, 0.3, 0.5):
        times = torch.full((len(x),), t)
        alpha_bar = continuous_alpha_bar(times)[:, None, None, None]
        noise = torch.randn_like(x)
        noisy = alpha_bar.sqrt() * (2 * x - 1) + (1 - alpha_bar).sqrt() * noise
        with torch.no_grad():
            error = (digits_score_model(noisy, times) - noise).square().mean().item()
        assert error < 0.5, (t, error)
    torch.manual_seed(0)
    assert denoising_loss(digits_score_model, 2 * x - 1).item() < 0.5
