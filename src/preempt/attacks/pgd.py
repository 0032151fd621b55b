"""Projected gradient descent (Madry et al.) under Linf or L2."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import validate_call
from torch import Tensor, nn

from preempt.attacks.base import Attack
from preempt.constraints import ARBITRARY_TYPES, AtLeastOne, Eps, Norm, Positive
from preempt.threat import project, random_uniform, steepest_direction


class PGD(Attack):
    """`steps` steepest-ascent steps on the cross-entropy, each projected back into the eps-ball and [0,1]."""

    @validate_call(config=ARBITRARY_TYPES)
    def __init__(
        self,
        model: nn.Module | None,
        eps: Eps,
        norm: Norm = "Linf",
        steps: AtLeastOne = 10,
        step_size: Positive | None = None,
        random_start: bool = True,
    ) -> None:
        super().__init__(model, eps, norm)
        self.steps = steps
        # 2.5 * eps / steps lets the iterate cross the ball and still reach its boundary (Madry et al.).
        self.step_size = step_size if step_size is not None else 2.5 * eps / steps
        self.random_start = random_start

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        x = x.detach()
        x_adv = x + random_uniform(x.shape, self.eps, self.norm, like=x) if self.random_start else x
        x_adv = project(x_adv, x, self.eps, self.norm)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            loss = F.cross_entropy(self.model(x_adv), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_adv)
            step = self.step_size * steepest_direction(grad, self.norm)
            x_adv = project(x_adv.detach() + step, x, self.eps, self.norm)
        return x_adv.detach()
