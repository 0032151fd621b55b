"""Bi-Level preemptive robustification (Moon, An and Song, AAAI 2022), as its authors' code runs it.

The sender searches the eps-box around x for the image whose *worst case* is best: it minimizes the backbone's
cross-entropy at an inner PGD adversarial point of the candidate image, on the classifier's labels for clean x.
This class is the authors' algorithm (`snu-mllab/preemptive-robustification`). The Fast Preemption paper reads
Bi-Level as 100 backward steps of its own framework (eta 0.1, T← 100, N 1, PGD inner optimizer): that reading
is the preset `defense=bilevel_fp`, built on `FastPreemption`, not this class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import validate_call
from torch import Tensor, nn

from preempt.attacks.pgd import PGD
from preempt.parts.constraints import ARBITRARY_TYPES, AtLeastOne, Eps, Norm, Positive
from preempt.parts.defense import Defense
from preempt.threat import project, random_uniform, validate_budget

# The authors' settings: RMSprop on the tanh variable under Linf, plain gradient descent on pixels under L2.
DEFAULT_LR = {"Linf": 0.1, "L2": 0.001, "normalized_L2": 0.001, "RMS": 0.001}
TANH_SHRINK = 0.999  # the initial point is mapped slightly inside the box, where atanh is finite (the authors' 1.999/2)


class BiLevel(Defense):
    """min over x_r in B(x, eps) ∩ [0,1] of CE(f_b(x_r + δ*(x_r)), ŷ), δ* an inner PGD attack on x_r.

    Linf: x_r = lower + (tanh(w)+1)/2·(upper − lower) with the box [max(x−eps,0), min(x+eps,1)], w started at
    x + U(−eps, eps) and optimized by RMSprop (lr 0.1) for `iterations` (100) steps. L2, normalized_L2 and RMS:
    projected gradient descent on the pixels (lr 0.001 on the raw gradient), started at a uniform point of the
    ball. The inner attack is PGD with one random start, `inner_steps` (20) steps of `inner_step_size`
    (default eps/4: 2/255 at 8/255, 0.125 at L2 0.5), on the same labels.

    The outer gradient is first-order: δ* is a constant, so it is ∇CE at x_r + δ* (as in the authors' code, whose
    inner gradients are detached; under L2 their code also differentiates the ball projection, dropped here).
    The loss is summed over images, so each image is optimized as if alone; the whole batch runs at once.
    """

    @validate_call(config=ARBITRARY_TYPES)
    def __init__(
        self,
        backbone: nn.Module | None,
        eps: Eps,
        norm: Norm = "Linf",
        iterations: AtLeastOne = 100,
        lr: Positive | None = None,
        inner_steps: AtLeastOne = 20,
        inner_step_size: Eps | None = None,
    ) -> None:
        validate_budget(eps, norm)
        self.backbone = backbone
        self.eps = eps
        self.norm = norm
        self.iterations = iterations
        self.lr = lr or DEFAULT_LR[norm]
        # The inner attack on x_r: PGD with one random start, raising CE on the sender's labels.
        self.inner_attack = PGD(backbone, eps, norm, steps=inner_steps, step_size=inner_step_size or eps / 4)

    def __call__(self, x: Tensor, labels: Tensor) -> Tensor:
        x = x.detach()
        return self.robustify_in_box(x, labels) if self.norm == "Linf" else self.robustify_in_ball(x, labels)

    def worst_case_loss(self, x_r: Tensor, labels: Tensor) -> Tensor:
        """Σ over images of CE at x_r + δ*, differentiable w.r.t. x_r with δ* held constant."""
        delta = self.inner_attack(x_r.detach(), labels) - x_r.detach()
        return F.cross_entropy(self.backbone(x_r + delta), labels, reduction="sum")

    def robustify_in_box(self, x: Tensor, labels: Tensor) -> Tensor:
        lower, upper = (x - self.eps).clamp(min=0.0), (x + self.eps).clamp(max=1.0)
        start = (x + random_uniform(x, self.eps, self.norm)).clamp(0.0, 1.0)
        fraction = (start - lower) / (upper - lower)
        w = torch.atanh((2 * fraction - 1) * TANH_SHRINK).requires_grad_(True)
        optimizer = torch.optim.RMSprop([w], lr=self.lr)

        def image() -> Tensor:
            return lower + (torch.tanh(w) + 1) / 2 * (upper - lower)

        for _ in range(self.iterations):
            (w.grad,) = torch.autograd.grad(self.worst_case_loss(image(), labels), w)
            optimizer.step()
        return image().detach()

    def robustify_in_ball(self, x: Tensor, labels: Tensor) -> Tensor:
        x_r = project(x + random_uniform(x, self.eps, self.norm), x, self.eps, self.norm)
        for _ in range(self.iterations):
            x_r = x_r.requires_grad_(True)
            (grad,) = torch.autograd.grad(self.worst_case_loss(x_r, labels), x_r)
            x_r = project(x_r.detach() - self.lr * grad, x, self.eps, self.norm)
        return x_r
