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
from preempt.attacks.base import recorded_rounds
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
    batch of each image shape under the bound of `memory_budget_mb` (null: the device's default, `preempt.speed`)
    for a pass's saved activations and copies: the fastest of that bound and its halvings, timed once per backbone,
    input shape and device and kept in the JSON file `chunk_timings`, or the bound itself when `chunk_timings` is
    null. When the batch's N×B random starts fit `memory_budget_mb` too, they are drawn for the whole batch first
    and only the passes are chunked, so the chunk size changes memory and speed, not the draws (the backbone's float
    kernels may still differ by batch shape; the kept choice keeps them the same run to run). Larger batches (photos
    at their own resolution) draw their starts in rounds that fit the budget, which changes the protection's last
    bits, or its starts where a split draw differs from a whole one (`averaged_perturbation`).
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
        self.copies_setting = copies_per_pass
        self.copies_per_pass = copies_per_pass  # the setting, or the last batch's decided pass size
        self.memory_budget_mb = memory_budget_mb
        self.chunk_timings = chunk_timings
        self.chunk_choice: dict | None = None  # the last batch's timed choice, when one was made or read
        self.pass_sizes: dict[tuple, tuple[int, dict | None]] = {}  # per image shape and device: size, choice
        self.round_sizes: dict[tuple, int] = {}  # per batch shape and device: random starts per image per round
        self.recorded_steps = recorded_rounds(len(self.directions), record_every)
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
        self.pass_size(x[0], self.starts_per_round(x) * len(x))

    def pass_size(self, image: Tensor, copies_per_step: int) -> int:
        """Copies per backbone pass: the setting, or the timed choice under the memory bound and the `copies_per_step`
        a step has (the memory bound itself without a timings file), decided once per shape of `image` (a pass
        sized on a thumbnail would not fit a photo)."""
        if self.copies_setting is not None:
            return self.copies_setting
        key = (*image.shape, str(image.device))
        if key not in self.pass_sizes and self.chunk_timings is None:
            self.pass_sizes[key] = speed.copies_per_pass(self.backbone, image, self.memory_budget_mb), None
        elif key not in self.pass_sizes:
            choice = speed.chunk_choice(
                self.backbone, image, self.memory_budget_mb, Path(self.chunk_timings), input_gradient, copies_per_step
            )
            self.pass_sizes[key] = choice["copies_per_pass"], choice
        self.copies_per_pass, self.chunk_choice = self.pass_sizes[key]
        return self.copies_per_pass

    def starts_per_round(self, x: Tensor) -> int:
        """How many random starts of each image a round draws and keeps: all N when the batch's N×B starts fit the
        memory budget (one round per step), else as many as fit, at least one; decided once per batch shape."""
        key = (*x.shape, str(x.device))
        if key not in self.round_sizes:
            budget = speed.memory_budget_bytes(x.device, self.memory_budget_mb)
            self.round_sizes[key] = max(1, min(self.n_samples, budget // x.nbytes))
        return self.round_sizes[key]

    def averaged_perturbation(self, x_t: Tensor, x: Tensor, labels: Tensor, lower_loss: bool) -> Tensor:
        """Mean over N random starts of (inner example − x_t): Algorithm 1, steps 4–9 and 15–20.

        Each round (`round_sums`) adds its examples to each image's sum. Within the memory budget a step is one
        round of all N starts (`starts_per_round`): the chunk size changes no draw, and the sum divided by N is
        exactly torch's mean. A batch whose N×B starts outgrow the budget (a photo at its own resolution) is
        averaged over rounds. Where a round draws the starts one draw would (the CPU with Linf, for one photo or
        with `randomness=per_sample`) the protection then differs only in the sum's float order and the passes'
        shapes (last bits, which can flip a near-zero gradient's sign); the L2 norms' normal draws, CUDA's generator
        and a per-batch stream of several images draw other starts."""
        batch, n = x_t.shape[0], self.n_samples
        starts = self.starts_per_round(x)
        per_pass = self.pass_size(x[0], batch * starts)
        total = None
        for samples in speed.chunks(n, starts):
            sums = self.round_sums(x_t, x, labels, lower_loss, samples.stop - samples.start, per_pass)
            total = sums if total is None else total.add_(sums)
        return total.div_(n).sub_(x_t)

    def round_sums(self, x_t: Tensor, x: Tensor, labels: Tensor, lower_loss: bool, rows: int, per_pass: int) -> Tensor:
        """Each image's sum of `rows` inner examples. Their random starts are drawn at once ([x_0 × rows, x_1 × rows,
        ...], around views of a single image, or the repeated pixels of several, freed after the draw); the inner
        optimizer runs over them chunk by chunk (one backbone pass per inner iteration) and writes each chunk's
        examples over its starts. Only the draw makes tensors of all the round's copies, and they are gone when it
        returns: on 224-px photos one is hundreds of MiB, which malloc maps fresh from the kernel, and page-faults,
        every time one is made (EfficientNet-Lite0 at batch 128: 1.43× the passes' floor when every step's
        operation made one). Without `random_start` the offsets are zero: each inner optimizer starts at x_t
        (Eq. 8)."""
        batch = x_t.shape[0]
        if self.random_start:
            examples = random_uniform(copies(x, slice(0, batch * rows), rows), self.eps, self.norm, rows)
        else:
            examples = x.new_zeros(batch * rows, *x.shape[1:])
        for part in speed.chunks(batch * rows, per_pass):
            iterate = copies(x_t, part, rows)
            chunk = examples[part].add_(iterate)  # over its start: a chunk makes no tensor of its own
            if self.clamp_starts:
                chunk.clamp_(0.0, 1.0)
            ball_center = copies(x, part, rows) if self.project_around == "original" else iterate
            image_labels = labels[torch.arange(part.start, part.stop, device=x.device) // rows]
            for _ in range(self.iterations):
                chunk = fgsm_step(
                    self.backbone, chunk, image_labels, self.step_size, ball_center, self.eps, self.norm, lower_loss
                )
            examples[part] = chunk
        return examples.view(batch, rows, *x.shape[1:]).sum(dim=1)


def copies(images: Tensor, part: slice, per_image: int) -> Tensor:
    """Rows `part` of the images repeated `per_image` times each ([x_0 × per_image, x_1 × per_image, ...]): a
    broadcast view of one image, not copies of it, when all the rows are of that image (every chunk of a photo)."""
    first, last = part.start // per_image, (part.stop - 1) // per_image
    if first == last:
        return images[first : first + 1].expand(part.stop - part.start, *images.shape[1:])
    return images[torch.arange(part.start, part.stop, device=images.device) // per_image]
