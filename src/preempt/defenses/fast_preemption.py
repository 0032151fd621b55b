"""Fast Preemption (Algorithm 1 of the Fast Preemption paper): forward-backward cascade with N averaged FGSMs."""

from __future__ import annotations

from pydantic import validate_call
from torch import Tensor, nn

from preempt.attacks.fgsm import fgsm_step
from preempt.constraints import ARBITRARY_TYPES, AtLeastOne, Eps, NonNegative, Norm, StepFraction
from preempt.defenses.base import Defense
from preempt.threat import project, random_uniform, validate_budget

LOWER_LOSS = True  # forward propagation (Eq. 10): FGSM that moves away from the wrong classes
RAISE_LOSS = False  # backward propagation (Eq. 8): FGSM attack whose perturbation is then reversed


class FastPreemption(Defense):
    """x_r = T← reversed-attack steps after T→ direct-enhancement steps on CE(f_b(·), f_c(x)).

    Each step draws N random starts in the eps-ball around the current iterate, runs one FGSM step of size
    eps from each (all N×B copies in one batched forward/backward pass), averages the N results and moves
    the iterate by eta times that average perturbation: towards it when forward, away from it when backward.
    Every iterate is projected to the eps-ball around the original x and to [0,1].
    """

    @validate_call(config=ARBITRARY_TYPES)
    def __init__(
        self,
        backbone: nn.Module | None,
        eps: Eps,
        eta: StepFraction = 0.7,
        forward_steps: NonNegative = 1,
        backward_steps: NonNegative = 2,
        n_samples: AtLeastOne = 20,
        norm: Norm = "Linf",
    ) -> None:
        validate_budget(eps, norm)
        if forward_steps + backward_steps == 0:
            raise ValueError(
                "forward_steps=0 and backward_steps=0 leave the image unprotected: set at least one (the paper "
                "uses forward_steps=1, backward_steps=2); for no protection use defense=none"
            )
        self.backbone = backbone
        self.eps = eps
        self.eta = eta
        self.forward_steps = forward_steps
        self.backward_steps = backward_steps
        self.n_samples = n_samples
        self.norm = norm

    def warnings(self) -> list[str]:
        if self.eta * (self.forward_steps + self.backward_steps) <= 1:
            return [
                f"eta·(forward_steps+backward_steps) = {self.eta * (self.forward_steps + self.backward_steps):.2f} "
                f"≤ 1: the protection cannot reach the eps-ball's boundary (the paper requires > 1; its settings "
                f"are eta=0.7, forward_steps=1, backward_steps=2)"
            ]
        return []

    def __call__(self, x: Tensor, labels: Tensor) -> Tensor:
        x = x.detach()
        x_t = x
        for _ in range(self.forward_steps):
            x_t = project(x_t + self.eta * self.averaged_fgsm(x_t, x, labels, LOWER_LOSS), x, self.eps, self.norm)
        for _ in range(self.backward_steps):
            x_t = project(x_t - self.eta * self.averaged_fgsm(x_t, x, labels, RAISE_LOSS), x, self.eps, self.norm)
        return x_t

    def averaged_fgsm(self, x_t: Tensor, x: Tensor, labels: Tensor, lower_loss: bool) -> Tensor:
        """Mean over N random starts of (FGSM example − x_t): Algorithm 1, steps 4–9 and 15–20."""
        batch, n = x_t.shape[0], self.n_samples
        center = x.repeat_interleave(n, dim=0)  # [x_0 × N, x_1 × N, ...]: one pass for all starts
        starts = x_t.repeat_interleave(n, dim=0) + random_uniform(center, self.eps, self.norm)
        stepped = fgsm_step(
            self.backbone, starts, labels.repeat_interleave(n), self.eps, center, self.eps, self.norm, lower_loss
        )
        return stepped.view(batch, n, *x_t.shape[1:]).mean(dim=1) - x_t
