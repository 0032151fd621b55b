"""Fast Preemption (Algorithm 1 of the Fast Preemption paper): forward-backward cascade with N averaged FGSMs.

Every knob of the paper's ablations is a setting: the inner optimizer (FGSM, or Eq. 12's I-step PGD; Table VIII),
the order of the steps (cascade, or the "Alternate" curve of Figure 8), the inner start (random as Algorithm 1, or
x_t as Eq. 8), N, T→, T← and eta; the iterates of chosen steps can be kept (Figure 8's curve). Two more settings exist
only to reproduce the authors' public code (`azrealwang/MSPD`), which differs from the paper; the preset
`defense=fast_preemption_mspd` sets them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import validate_call
from torch import Tensor, nn

from preempt import speed
from preempt.attacks.fgsm import fgsm_step, loss_gradient
from preempt.parts.constraints import ARBITRARY_TYPES, AtLeastOne, Eps, NonNegative, Norm, Positive, StepFraction
from preempt.parts.defense import Defense
from preempt.threat import project, random_uniform, validate_budget

LOWER_LOSS = True  # forward propagation (Eq. 10): FGSM that moves away from the wrong classes
RAISE_LOSS = False  # backward propagation (Eq. 8): FGSM attack whose perturbation is then reversed
PGD_DEFAULT_ITERATIONS = 10


def input_gradient(backbone: nn.Module, copies: Tensor) -> Tensor:
    """One of the defense's backbone passes, for timing chunk sizes: the input gradient its FGSM steps take (the
    labels do not change the cost)."""
    return loss_gradient(backbone, copies, torch.zeros(len(copies), dtype=torch.long, device=copies.device))


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
    random_start: each inner optimizer starts at x_t + δ_n, δ_n ~ U(−ε, ε) (Algorithm 1, lines 5–6 and 16–17), or at
    x_t itself (Eq. 8's x_{t,0} = x_t, Bi-Level's backward step; N = 1 then, as N equal starts give N equal examples).
    project_around: the inner examples are projected to the eps-ball around the `original` image (the paper's
    Π_{x,ε}, Algorithm 1 lines 7 and 18) or around the current `iterate` (the authors' code).
    clamp_starts: clip the random starts x_t + δ to [0,1] before the inner step (the authors' code; the paper
    does not). The paper's rule is the default everywhere.
    copies_per_pass: how many of the N×B copies one backbone forward+backward takes; null: chosen on the first
    batch under the bound of `memory_budget_mb` of saved activations (null: the device's default, `preempt.speed`):
    the fastest of that bound and its halvings, timed once per backbone, input shape and device and kept in the
    JSON file `chunk_timings`, or the bound itself when `chunk_timings` is null. Only the passes are chunked: every
    random start is drawn for the whole batch first, so the chunk size changes memory and speed, not the draws
    (the backbone's float kernels may still differ by batch shape; the kept choice keeps them the same run to run).
    record_every: k keeps the iterate after steps k, 2k, … and the last in `snapshots`, a list of (step, images) for
    the last call (Figure 8's per-step curve); null keeps nothing.
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
        random_start: bool = True,
        project_around: Literal["original", "iterate"] = "original",
        clamp_starts: bool = False,
        copies_per_pass: AtLeastOne | None = None,
        memory_budget_mb: Positive | None = None,
        chunk_timings: str | None = None,
        record_every: AtLeastOne | None = None,
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
        if not random_start and n_samples > 1:
            raise ValueError(
                f"random_start=false with n_samples={n_samples}: every inner optimizer starts at x_t, so the "
                f"{n_samples} examples averaged are identical ({n_samples} times the cost of one): set n_samples=1 "
                f"(Eq. 8's x_t,0 = x_t, as defense=bilevel_fp), or random_start=true (Algorithm 1)"
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
        self.random_start = random_start
        self.project_around = project_around
        self.clamp_starts = clamp_starts
        self.copies_per_pass = copies_per_pass
        self.memory_budget_mb = memory_budget_mb
        self.chunk_timings = chunk_timings
        self.chunk_choice: dict | None = None  # the timed choice, when one was made or read
        steps = len(self.directions)
        self.recorded_steps = (
            () if record_every is None else tuple(s for s in range(1, steps + 1) if s % record_every == 0 or s == steps)
        )
        self.snapshots: list[tuple[int, Tensor]] = []  # the iterates after `recorded_steps`, from the last call

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
        self.snapshots = []
        for step, lower_loss in enumerate(self.directions, start=1):
            # Forward steps add the averaged perturbation (Eq. 11), backward steps subtract it (Eq. 9).
            sign = 1 if lower_loss else -1
            x_t = project(
                x_t + sign * self.eta * self.averaged_perturbation(x_t, x, labels, lower_loss), x, self.eps, self.norm
            )
            if step in self.recorded_steps:
                self.snapshots.append((step, x_t))
        return x_t

    def prepare(self, x: Tensor) -> None:
        self.pass_size(x[0], self.n_samples * len(x))

    def pass_size(self, image: Tensor, copies_per_step: int) -> int:
        """Copies per backbone pass: the setting, or the timed choice under the memory bound and the `copies_per_step`
        a step has (the memory bound itself without a timings file), decided once on `image`."""
        if self.copies_per_pass is None and self.chunk_timings is None:
            self.copies_per_pass = speed.copies_per_pass(self.backbone, image, self.memory_budget_mb)
        elif self.copies_per_pass is None:
            self.chunk_choice = speed.chunk_choice(
                self.backbone, image, self.memory_budget_mb, Path(self.chunk_timings), input_gradient, copies_per_step
            )
            self.copies_per_pass = self.chunk_choice["copies_per_pass"]
        return self.copies_per_pass

    def averaged_perturbation(self, x_t: Tensor, x: Tensor, labels: Tensor, lower_loss: bool) -> Tensor:
        """Mean over N random starts of (inner example − x_t): Algorithm 1, steps 4–9 and 15–20.

        The N×B random starts are drawn for the whole batch first ([x_0 × N, x_1 × N, ...]), so the chunk size never
        changes the draws; the inner optimizer then runs chunk by chunk (one backbone pass per inner iteration) and
        writes each chunk's examples over its starts. So only the draw makes tensors of all N×B copies: on 224-px
        photos each is hundreds of MiB, which malloc maps fresh from the kernel, and page-faults, every time one is
        made (EfficientNet-Lite0 at batch 128: 1.43× the passes' floor when every step's operation made one).
        Without `random_start` the offsets are zero: each inner optimizer starts at x_t (Eq. 8)."""
        batch, n = x_t.shape[0], self.n_samples
        centers = x.repeat_interleave(n, dim=0)
        if self.random_start:
            examples = random_uniform(centers, self.eps, self.norm, rows_per_sample=n)
        else:
            examples = torch.zeros_like(centers)
        for part in speed.chunks(batch * n, self.pass_size(x[0], batch * n)):
            image_of_copy = torch.arange(part.start, part.stop, device=x.device) // n
            iterate = x_t[image_of_copy]
            chunk = iterate + examples[part]
            if self.clamp_starts:
                chunk = chunk.clamp(0.0, 1.0)
            ball_center = centers[part] if self.project_around == "original" else iterate
            for _ in range(self.iterations):
                chunk = fgsm_step(
                    self.backbone,
                    chunk,
                    labels[image_of_copy],
                    self.step_size,
                    ball_center,
                    self.eps,
                    self.norm,
                    lower_loss,
                )
            examples[part] = chunk
        return examples.view(batch, n, *x_t.shape[1:]).mean(dim=1) - x_t
