"""Szegedy et al.'s box-constrained L-BFGS attack, on SciPy's L-BFGS-B (no kept library ships it)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.optimize
import torch
import torch.nn.functional as F
from pydantic import validate_call
from torch import Tensor, nn

from preempt.attacks.base import Attack, attack_succeeded
from preempt.constraints import ARBITRARY_TYPES, AtLeastOne, Eps, Norm, Positive
from preempt.threat import project


def adversarial_loss(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    """Per image: the cross-entropy on the target (Szegedy's form), or the margin relu(z_y − max_{j≠y} z_j).

    Untargeted, −cross-entropy on y would be unbounded below: for any c the minimizer would run off to ever
    more confident misclassifications instead of stopping near the decision boundary. The margin is zero once
    the image is misclassified, so ‖δ‖² pulls the iterate back to the closest misclassified point.
    """
    if target is not None:
        return F.cross_entropy(logits, target, reduction="none")
    true_logit = logits.gather(1, y[:, None]).squeeze(1)
    best_other = logits.scatter(1, y[:, None], -torch.inf).amax(dim=1)
    return (true_logit - best_other).relu()


class _JointProblem:
    """The batch as one L-BFGS-B problem: Σᵢ ‖x′ᵢ − xᵢ‖₂² + cᵢ·lossᵢ(x′ᵢ) over the concatenated pixels.

    The terms are independent, so one solve minimizes every image's own objective with its own cᵢ. Every
    point the solver evaluates is also a candidate: each image keeps the closest one that succeeded
    (`closest`), and `found` says which images succeeded during the current solve.
    """

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> None:
        self.model = model
        self.x = x
        self.y = y
        self.target = target
        self.x_flat = x.detach().cpu().double().numpy().ravel()
        self.closest = x.clone()
        self.closest_distance = torch.full((len(x),), torch.inf, dtype=x.dtype, device=x.device)
        self.found = torch.zeros(len(x), dtype=torch.bool, device=x.device)

    def solve(self, const: Tensor, max_iterations: int) -> Tensor:
        """One L-BFGS-B run from the clean images with per-image constants `const`; its last iterate."""
        self.found = torch.zeros_like(self.found)
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
        weighted = const.to(logits) * adversarial_loss(logits, self.y, self.target)
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
        self.found |= succeeded


class LBFGS(Attack):
    """Minimize ‖x′−x‖₂² + c·loss(f(x′)) over x′ ∈ [0,1]ᵈ (true box constraints), per image the smallest c
    that succeeds; keep each image's closest success and clip it into the budget with `threat.project`.

    The search over c runs `search_steps` solves, each at most `max_iterations` L-BFGS-B iterations, for the
    whole batch at once: an image's c is multiplied by 10 until a solve succeeds, then bisected between its
    largest failing and smallest succeeding c (as in Carlini & Wagner). Like C&W it has no budget of its own,
    so an image whose closest success lies outside the eps-ball usually stays correctly classified. An image
    that never succeeds gets the last iterate of the final solve (its largest c), projected: a best effort.
    Gradients come from torch autograd with respect to the input; SciPy works in float64.
    """

    norms: ClassVar[tuple[str, ...]] = ("L2", "normalized_L2")

    @validate_call(config=ARBITRARY_TYPES)
    def __init__(
        self,
        model: nn.Module | None,
        eps: Eps,
        norm: Norm = "L2",
        search_steps: AtLeastOne = 6,
        max_iterations: AtLeastOne = 100,
        initial_const: Positive = 1e-2,
        targeted: bool = False,
    ) -> None:
        super().__init__(model, eps, norm, targeted)
        self.search_steps = search_steps
        self.max_iterations = max_iterations
        self.initial_const = initial_const

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        problem = _JointProblem(self.gradient_model, x, y, target)
        const = torch.full((len(x),), self.initial_const, dtype=torch.float64, device=x.device)
        failing = torch.zeros_like(const)
        succeeding = torch.full_like(const, torch.inf)
        for _ in range(self.search_steps):
            last = problem.solve(const, self.max_iterations)
            succeeding = torch.where(problem.found, const, succeeding)
            failing = torch.where(problem.found, failing, const)
            const = torch.where(succeeding.isinf(), const * 10, (failing + succeeding) / 2)
        succeeded = problem.closest_distance.isfinite().view(-1, *([1] * (x.dim() - 1)))
        return project(torch.where(succeeded, problem.closest, last), x, self.eps, self.norm)
