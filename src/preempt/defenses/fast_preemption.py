"""Fast Preemption (Algorithm 1 of the Fast Preemption paper): forward-backward cascade with N averaged FGSMs.

Every knob of the paper's ablations is a setting: the inner optimizer (FGSM, or Eq. 12's I-step PGD; Table VIII),
the order of the steps (cascade, or the "Alternate" curve of Figure 8), N, T→, T← and eta. Two more settings exist
only to reproduce the authors' public code (`azrealwang/MSPD`), which differs from the paper; the preset
`defense=fast_preemption_mspd` sets them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import validate_call
from torch import Tensor, nn

from preempt import speed
from preempt.attacks.fgsm import fgsm_step
from preempt.parts.constraints import ARBITRARY_TYPES, AtLeastOne, Eps, NonNegative, Norm, Positive, StepFraction
from preempt.parts.defense import Defense
from preempt.threat import project, random_uniform, validate_budget

LOWER_LOSS = True  # forward propagation (Eq. 10): FGSM that moves away from the wrong classes
RAISE_LOSS = False  # backward propagation (Eq. 8): FGSM attack whose perturbation is then reversed
PGD_DEFAULT_ITERATIONS = 10


def step_order(forward_steps: int, backward_steps: int, schedule: str) -> list[bool]:
    """The direction of every step (True: forward). Cascade: all T→ forward steps, then all T← backward ones
    (Algorithm 1). Alternate: forward, backward, forward, … while both last, then the rest of the longer one."""
    if schedule == "cascade":
        return [LOWER_LOSS] * forward_steps + [RAISE_LOSS] * backward_steps
    paired = min(forward_steps, backward_steps)
    rest = [LOWER_LOSS] * (forward_steps - paired) + [RAISE_LOSS] * (backward_steps - paired)
    return [LOWER_LOSS, RAISE_LOSS] * paired + rest


class FastPreemption(Defense):
    """x_r = T← reversed-attack steps after T→ direct-enhancement steps on CE(f_b(·), f_c(x)).

    Each step draws N random starts in the eps-ball around the current iterate, runs the inner optimizer from
    each (all N×B copies in one batched forward/backward pass per inner iteration), averages the N results and
    moves the iterate by eta times that average perturbation: towards it when forward, away from it when
    backward. Every iterate is projected to the eps-ball around the original x and to [0,1].

    optimizer: `fgsm`, one step of size eps (Algorithm 1); `pgd`, `iterations` steps of `step_size` (Eq. 12;
    default 10 steps of min(eps, 2.5·eps/iterations), so `iterations=1` is exactly FGSM).
    schedule: `cascade` (Algorithm 1) or `alternate` (Figure 8's "Alternate"; see `step_order`).
    project_around: the inner examples are projected to the eps-ball around the `original` image (the paper's
    Π_{x,ε}, Algorithm 1 lines 7 and 18) or around the current `iterate` (the authors' code).
    clamp_starts: clip the random starts x_t + δ to [0,1] before the inner step (the authors' code; the paper
    does not). The paper's rule is the default everywhere.
    copies_per_pass: how many of the N×B copies one backbone forward+backward takes; null: as many as fit
    `memory_budget_mb` of saved activations (null: the device's default, `preempt.speed`), measured on the first
    batch. Only the passes are chunked: every random start is drawn for the whole batch first, so the chunk size
    changes memory and speed, not the draws (the backbone's float kernels may still differ by batch shape).
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
        optimizer: Literal["fgsm", "pgd"] = "fgsm",
        iterations: AtLeastOne | None = None,
        step_size: Eps | None = None,
        schedule: Literal["cascade", "alternate"] = "cascade",
        project_around: Literal["original", "iterate"] = "original",
        clamp_starts: bool = False,
        copies_per_pass: AtLeastOne | None = None,
        memory_budget_mb: Positive | None = None,
    ) -> None:
        validate_budget(eps, norm)
        if forward_steps + backward_steps == 0:
            raise ValueError(
                "forward_steps=0 and backward_steps=0 leave the image unprotected: set at least one (the paper "
                "uses forward_steps=1, backward_steps=2); for no protection use defense=none"
            )
        if optimizer == "fgsm" and (iterations not in (None, 1) or step_size is not None):
            raise ValueError(
                f"iterations={iterations} and step_size={step_size} set the PGD inner optimizer, and optimizer=fgsm "
                f"is one step of size eps: set optimizer=pgd, or leave iterations and step_size unset (null)"
            )
        self.backbone = backbone
        self.eps = eps
        self.eta = eta
        self.forward_steps = forward_steps
        self.backward_steps = backward_steps
        self.n_samples = n_samples
        self.norm = norm
        self.iterations = 1 if optimizer == "fgsm" else iterations or PGD_DEFAULT_ITERATIONS
        self.step_size = step_size or min(eps, 2.5 * eps / self.iterations)
        self.directions = step_order(forward_steps, backward_steps, schedule)
        self.project_around = project_around
        self.clamp_starts = clamp_starts
        self.copies_per_pass = copies_per_pass
        self.memory_budget_mb = memory_budget_mb

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
        for lower_loss in self.directions:
            # Forward steps add the averaged perturbation (Eq. 11), backward steps subtract it (Eq. 9).
            sign = 1 if lower_loss else -1
            x_t = project(
                x_t + sign * self.eta * self.averaged_perturbation(x_t, x, labels, lower_loss), x, self.eps, self.norm
            )
        return x_t

    def pass_size(self, image: Tensor) -> int:
        """Copies per backbone pass: the setting, or what the memory budget allows, measured once on `image`."""
        if self.copies_per_pass is None:
            self.copies_per_pass = speed.copies_per_pass(self.backbone, image, self.memory_budget_mb)
        return self.copies_per_pass

    def averaged_perturbation(self, x_t: Tensor, x: Tensor, labels: Tensor, lower_loss: bool) -> Tensor:
        """Mean over N random starts of (inner example − x_t): Algorithm 1, steps 4–9 and 15–20."""
        batch, n = x_t.shape[0], self.n_samples
        center = x.repeat_interleave(n, dim=0)  # [x_0 × N, x_1 × N, ...]: one pass for all starts
        iterate = x_t.repeat_interleave(n, dim=0)
        examples = iterate + random_uniform(center, self.eps, self.norm, rows_per_sample=n)
        if self.clamp_starts:
            examples = examples.clamp(0.0, 1.0)
        ball_center = center if self.project_around == "original" else iterate
        repeated_labels = labels.repeat_interleave(n)
        pass_size = self.pass_size(x[0])
        for _ in range(self.iterations):
            examples = fgsm_step(
                self.backbone,
                examples,
                repeated_labels,
                self.step_size,
                ball_center,
                self.eps,
                self.norm,
                lower_loss,
                copies_per_pass=pass_size,
            )
        return examples.view(batch, n, *x_t.shape[1:]).mean(dim=1) - x_t
