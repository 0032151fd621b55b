"""Szegedy et al.'s box-constrained L-BFGS attack, on SciPy's L-BFGS-B (no kept library ships it)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.optimize
import torch
import torch.nn.functional as F
from pydantic import validate_call
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from preempt.attacks.base import Attack, attack_succeeded, predict
from preempt.parts.constraints import ARBITRARY_TYPES, AtLeastOne, Eps, Norm, Positive
from preempt.threat import project


def adversarial_loss(logits: Tensor, y: Tensor, target: Tensor | None, margin: float) -> Tensor:
    """Per image: the cross-entropy on the target (Szegedy's form), or the squared hinge
    relu(z_y − max_{j≠y} z_j + margin)².

    Untargeted, −cross-entropy on y would be unbounded below: for any c the minimizer would run off to ever
    more confident misclassifications instead of stopping near the decision boundary. The hinge is zero once
    another class leads by `margin`, so ‖δ‖² holds the iterate near the closest misclassified point. Squared,
    it is smooth for L-BFGS and the minimizer crosses the boundary only once c is large enough, so the search
    for the smallest successful c ends just across it; the margin (> 0) is what lets it cross at all.
    """
    if target is not None:
        return F.cross_entropy(logits, target, reduction="none")
    true_logit = logits.gather(1, y[:, None]).squeeze(1)
    best_other = logits.scatter(1, y[:, None], -torch.inf).amax(dim=1)
    return (true_logit - best_other + margin).relu().square()


class _JointProblem:
    """The batch as one L-BFGS-B problem: Σᵢ ‖x′ᵢ − xᵢ‖₂² + cᵢ·lossᵢ(x′ᵢ) over the concatenated pixels.

    The terms are independent, so one solve minimizes every image's own objective with its own cᵢ. Every
    point the solver evaluates is also a candidate: each image keeps the closest one that succeeded.
    """

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, margin: float) -> None:
        self.model = model
        self.x = x
        self.y = y
        self.target = target
        self.margin = margin
        self.x_flat = x.detach().cpu().double().numpy().ravel()
        self.closest = x.clone()
        self.closest_distance = torch.full((len(x),), torch.inf, dtype=x.dtype, device=x.device)

    def solve(self, const: Tensor, max_iterations: int) -> Tensor:
        """One L-BFGS-B run from the clean images with per-image constants `const`; its last iterate.

        SciPy's BLAS runs single-threaded: its idle threads spinning between calls starve torch's threads in the
        objective, which made a CPU run several times slower.
        """
        with threadpool_limits(limits=1, user_api="blas"):
            result = scipy.optimize.minimize(
                self.value_and_gradient,
                self.x_flat,
                args=(const,),
                jac=True,
                method="L-BFGS-B",
                bounds=scipy.optimize.Bounds(np.zeros_like(self.x_flat), np.ones_like(self.x_flat)),
                options={"maxiter": max_iterations},
            )
        return self.as_images(result.x)

    def as_images(self, z: np.ndarray) -> Tensor:
        return torch.from_numpy(z).to(device=self.x.device, dtype=self.x.dtype).view_as(self.x)

    def value_and_gradient(self, z: np.ndarray, const: Tensor) -> tuple[float, np.ndarray]:
        candidate = self.as_images(z).requires_grad_(True)
        logits = self.model(candidate)
        weighted = const.to(logits) * adversarial_loss(logits, self.y, self.target, self.margin)
        (loss_gradient,) = torch.autograd.grad(weighted.sum(), candidate)
        self.remember(candidate.detach(), logits.detach())
        delta = z - self.x_flat
        value = float(delta @ delta) + weighted.sum().item()
        return value, 2 * delta + loss_gradient.cpu().double().numpy().ravel()

    def remember(self, candidate: Tensor, logits: Tensor) -> None:
        succeeded = attack_succeeded(logits.argmax(dim=1), self.y, self.target)
        distance = (candidate - self.x).flatten(start_dim=1).norm(dim=1)
        closer = succeeded & (distance < self.closest_distance)
        self.closest[closer] = candidate[closer]
        self.closest_distance[closer] = distance[closer]


class LBFGS(Attack):
    """Minimize ‖x′−x‖₂² + c·loss(f(x′)) over x′ ∈ [0,1]ᵈ (true box constraints), per image the smallest c
    whose minimizer succeeds; keep each image's closest success and clip it into the budget (`threat.project`).

    The search over c runs `search_steps` solves, each at most `max_iterations` L-BFGS-B iterations, for the
    whole batch at once: an image's c is multiplied by 10 until a solve's last iterate succeeds, then bisected
    between its largest failing and smallest succeeding c (as in Carlini & Wagner). Like C&W it has no budget
    of its own, so an image whose closest success lies outside the eps-ball usually stays correctly classified.
    An image that never succeeds gets the last iterate of the final solve (its largest c), projected: a best
    effort. `margin` is in logits (see `adversarial_loss`); smaller gives closer successes but needs larger c.
    Gradients come from torch autograd with respect to the input only; SciPy works in float64.
    """

    norms: ClassVar[tuple[str, ...]] = ("L2", "normalized_L2", "RMS")

    @validate_call(config=ARBITRARY_TYPES)
    def __init__(
        self,
        model: nn.Module | None,
        eps: Eps,
        norm: Norm = "L2",
        search_steps: AtLeastOne = 6,
        max_iterations: AtLeastOne = 100,
        initial_const: Positive = 1e-2,
        margin: Positive = 0.01,
        targeted: bool = False,
    ) -> None:
        super().__init__(model, eps, norm, targeted)
        self.search_steps = search_steps
        self.max_iterations = max_iterations
        self.initial_const = initial_const
        self.margin = margin

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        model = self.gradient_model
        problem = _JointProblem(model, x, y, target, self.margin)
        const = torch.full((len(x),), self.initial_const, dtype=torch.float64, device=x.device)
        failing = torch.zeros_like(const)
        succeeding = torch.full_like(const, torch.inf)
        for _ in range(self.search_steps):
            last = problem.solve(const, self.max_iterations)
            found = attack_succeeded(predict(model, last), y, target)
            succeeding = torch.where(found, const, succeeding)
            failing = torch.where(found, failing, const)
            const = torch.where(succeeding.isinf(), const * 10, (failing + succeeding) / 2)
        succeeded = problem.closest_distance.isfinite().view(-1, *([1] * (x.dim() - 1)))
        return project(torch.where(succeeded, problem.closest, last), x, self.eps, self.norm)
