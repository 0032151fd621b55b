"""The project's digits noise predictor: ε̂(x_t, t) in the images' shape, for any times."""

from __future__ import annotations

import pytest
import torch

from preempt.score_models.digits import DigitsUNet


def test_it_predicts_noise_of_the_images_shape_for_any_times() -> None:
    model = DigitsUNet(1, 16, width=8)
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([0.0, 0.5, 1.0])
    assert model(x, t).shape == x.shape
    with pytest.raises(ValueError, match="divide by 4"):
        DigitsUNet(1, 18)
