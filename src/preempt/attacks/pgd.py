"""Projected gradient descent (Madry et al.) under Linf, L2 or normalized L2."""

from __future__ import annotations

from pydantic import validate_call
from torch import Tensor, nn

from preempt.attacks.base import IterativeAttack
from preempt.attacks.fgsm import fgsm_step
from preempt.parts.constraints import ARBITRARY_TYPES, AtLeastOne, Eps, Norm, Positive
from preempt.threat import random_uniform


class PGD(IterativeAttack):
    """`steps` FGSM steps of `step_size` on the cross-entropy from a random start, each projected back into the
    eps-ball and [0,1]."""

    @validate_call(config=ARBITRARY_TYPES)
    def __init__(
        self,
        model: nn.Module | None,
        eps: Eps,
        norm: Norm = "Linf",
        steps: AtLeastOne = 10,
        step_size: Positive | None = None,
        random_start: bool = True,
        targeted: bool = False,
        early_stop: bool = False,
        record_every: AtLeastOne | None = None,
    ) -> None:
        super().__init__(model, eps, norm, steps, targeted, early_stop, record_every)
        # 2.5 * eps / steps lets the iterate cross the ball and still reach its boundary (Madry et al.).
        self.step_size = step_size if step_size is not None else 2.5 * eps / steps
        self.random_start = random_start

    def start(self, x: Tensor) -> Tensor:
        return x + random_uniform(x, self.eps, self.norm) if self.random_start else x

    def step(self, x_adv: Tensor, x: Tensor, goal: Tensor, toward_goal: bool) -> Tensor:
        model = self.gradient_model
        return fgsm_step(model, x_adv, goal, self.step_size, x, self.eps, self.norm, toward_labels=toward_goal)
