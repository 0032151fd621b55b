"""The one model interface: [0,1] pixels in, normalized inside, frozen in eval mode, shape checked."""

import pytest
import torch
from torch import nn

from preempt.models import ImageShapeMismatchError, PixelClassifier


def test_pixel_classifier_is_frozen_normalizes_and_checks_shape() -> None:
    network = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    model = PixelClassifier(network, name="toy", input_shape=(1, 2, 2), mean=(0.5,), std=(0.25,))
    model.train()
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    x = torch.rand(3, 1, 2, 2)
    assert torch.allclose(model(x), network((x - 0.5) / 0.25))
    with pytest.raises(ImageShapeMismatchError, match=r"toy expects .* 1×2×2 .* got 3×2×2.*dataset=folder"):
        model(torch.rand(3, 3, 2, 2))
