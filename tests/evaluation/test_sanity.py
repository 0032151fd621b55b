"""AutoAttack's own sanity checks, run on a model: each fires on the failure it is for, and none on a plain model."""

import pytest
import torch
from torch import nn

from preempt.evaluation.sanity import (
    FLAG_ADVICE,
    FLAGS,
    NonFiniteImagesError,
    refuse_non_finite_images,
    sanity_flags,
)


class Randomized(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x + 0.5 * torch.randn_like(x))


class Probabilities(Randomized):
    def forward(self, x):
        return self.model(x).softmax(dim=1)


class Rounded(Randomized):
    def forward(self, x):
        return self.model(torch.round(x * 4) / 4 + 0 * x)


def plain() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 10))


def test_each_flag_fires_on_its_failure_and_none_on_a_plain_model() -> None:
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 10, (8,))
    assert not any(sanity_flags(plain(), x, y).values())
    assert sanity_flags(Randomized(plain()), x, y)["randomized"]
    assert sanity_flags(Probabilities(plain()), x, y)["probability_output"]
    assert sanity_flags(Rounded(plain()), x, y)["zero_gradients"]


def test_every_flag_says_what_to_run_instead() -> None:
    assert set(FLAGS) == set(FLAG_ADVICE) and "square_beat_white_box" in FLAGS
    assert all(len(advice) > 40 for advice in FLAG_ADVICE.values())


def test_non_finite_images_are_refused_naming_how_many_which_samples_and_the_part() -> None:
    images, index = torch.rand(8, 1, 4, 4), torch.arange(100, 108)
    refuse_non_finite_images("protected", images, index)  # all finite: nothing to say
    images[1:, 0, 2, 3] = float("inf")
    expected = (
        r"7 of the 8 adversarial images of the batch from sample 100 .*\(samples 101, 102, 103, 104, 105, \.\.\.\)"
    )
    with pytest.raises(NonFiniteImagesError, match=expected + r".* Check the attack that made them"):
        refuse_non_finite_images("adversarial", images, index)
