"""The VP diffusion DiffPure runs: DDPM's discrete schedule, close to the continuous one it solves with."""

from __future__ import annotations

import math

import pytest
import torch

from preempt.score_models.vp import BETA_MAX, BETA_MIN, continuous_alpha_bar, discrete_alpha_bar


def test_the_discrete_schedule_is_ddpms_and_close_to_the_continuous_one() -> None:
    betas = [BETA_MIN / 1000 + (BETA_MAX - BETA_MIN) / 1000 * i / 999 for i in range(1000)]
    assert discrete_alpha_bar(100) == pytest.approx(math.prod(1 - b for b in betas[:100]), rel=1e-12)
    for steps in (75, 100, 150, 1000):
        continuous = float(continuous_alpha_bar(torch.tensor(steps / 1000, dtype=torch.float64)))
        assert discrete_alpha_bar(steps) == pytest.approx(continuous, rel=0.01, abs=1e-5)
