"""The one call shape DiffPure needs from a diffusion model: ε̂(x_t, t) at continuous VP times, shaped like x."""

import torch

from preempt.score_models.base import NoisePredictor
from preempt.score_models.digits import DigitsUNet


def test_every_shipped_network_takes_the_shape_and_the_times() -> None:
    model = DigitsUNet(1, 8, width=8)
    assert isinstance(model, NoisePredictor) and model.image_shape == (1, 8, 8) and model.name
    assert model(torch.randn(2, 1, 8, 8), torch.tensor([0.1, 0.9])).shape == (2, 1, 8, 8)
