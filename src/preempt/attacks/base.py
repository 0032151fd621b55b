"""The call shape every attack shares (torchattacks/AutoAttack style), and the round loop of iterative ones."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from preempt import randomness
from preempt.parts import Part
from preempt.parts.constraints import Eps, Norm
from preempt.threat import NORMS, distance, project, validate_budget

# An image "on the boundary" of its budget: within this fraction of eps (float steps and projections rarely
# land exactly on it).
BOUNDARY_TOLERANCE = 1e-3


def random_targets(y: Tensor, num_classes: int) -> Tensor:
    """A target per image drawn uniformly among its wrong classes (per batch or per sample: `preempt.randomness`)."""
    return (y + randomness.integers(1, num_classes, y)) % num_classes


def attack_succeeded(predictions: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    """Untargeted success is any misclassification; targeted success is the target predicted."""
    return predictions == target if target is not None else predictions != y


def predict(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


class Attack(Part, ABC):
    """Perturbs images within an eps-ball in `norm` to make `model` misclassify them (or predict a target).

    `attack(x, y)` returns adversarial images for clean images `x` in [0,1] with true labels `y`; a targeted
    attack (`targeted=True`) is given `target=` or draws one per image among the wrong classes. The attacked
    `model` (the victim, or victim∘g) is given at test start.
    Constructors check every setting and must not touch the model: the config validation builds each attack
    once with `model=None` to refuse bad settings before any model exists. `needs_gradients` says whether it
    follows the model's input gradients, which a non-differentiable receiver-side defense does not have.
    """

    bound: ClassVar[tuple[str, ...]] = ("model",)
    needs_gradients: ClassVar[bool] = True
    norms: ClassVar[tuple[str, ...]] = NORMS
    targeted: bool = False

    def __init__(self, model: nn.Module | None, eps: Eps, norm: Norm, targeted: bool = False) -> None:
        validate_budget(eps, norm)
        if norm not in self.norms:
            raise ValueError(
                f"{type(self).__name__} works in {' or '.join(self.norms)}, not norm={norm}: set threat.norm="
                f"{self.norms[0]} (and a threat.eps meant for it), or pick another attack"
            )
        self.model = model
        self.eps = eps
        self.norm = norm
        self.targeted = targeted

    @classmethod
    def label(cls, settings: Mapping[str, Any]) -> str:
        """The method's name, marked when the settings make it targeted."""
        return cls.method_name(settings) + (" targeted" if settings.get("targeted") else "")

    @classmethod
    def method_name(cls, settings: Mapping[str, Any]) -> str:
        return cls.__name__

    @property
    def gradient_model(self) -> nn.Module:
        """The model whose input gradients the attack follows (BPDA replaces the receiver's transform in it)."""
        return self.model

    def __call__(self, x: Tensor, y: Tensor, target: Tensor | None = None, start: Tensor | None = None) -> Tensor:
        """Adversarial images within the budget around `x`; from `start` (a reversion's guess) when given."""
        if not self.targeted:
            target = None
        elif target is None:
            with torch.no_grad():
                target = random_targets(y, self.model(x[:1]).shape[1])
        if start is None:
            return self.perturb(x.detach(), y, target).detach()
        return self.perturb_from(x.detach(), start.detach(), y, target).detach()

    @abstractmethod
    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Adversarial images; untargeted when `target` is None."""

    def perturb_from(self, x: Tensor, start: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """An attack with no start point of its own (a library's) attacks `start` within its own budget, and the
        result is projected into the budget around `x`: it does not know the second projection, so it may lose
        some of its strength there. Iterative attacks start from `start` inside the budget instead."""
        return project(self.perturb(start, y, target), x, self.eps, self.norm)


@dataclass(frozen=True)
class RoundRecord:
    """How many images of one batch were classified correctly, and attacked successfully, after each round."""

    rounds: tuple[int, ...]
    correct: Tensor
    success: Tensor
    total: int


def recorded_rounds(steps: int, every: int | None) -> tuple[int, ...]:
    """The rounds (or a defense's steps) a record keeps: every `every`-th and the last; none when `every` is None."""
    if every is None:
        return ()
    return tuple(r for r in range(1, steps + 1) if r % every == 0 or r == steps)


class IterativeAttack(Attack):
    """An attack made of rounds; optionally stops each image at its first success and records every k-th round.

    With `early_stop` an image keeps its first successful example, as judged by `judge` (the second paper's
    protocol: stop when the AE is predicted as the target within the budget). With `until_bound` an image also
    stops once its perturbation reaches the budget's boundary (distance ≥ (1 − 1e-3)·eps), the loop ends when no
    image is left, `steps` is only a cap, and `rounds_run` holds each image's rounds after a call. With
    `record_every=k`, `record` holds the batch's counts after rounds k, 2k, ... and the last round run (Figure
    3), from a fresh prediction of the attacked model on every current example: for a random receiver-side
    defense that is a new draw, so the curve shows what the receiver would decide, not the draw the attack
    stopped on.
    """

    def __init__(
        self,
        model: nn.Module | None,
        eps: Eps,
        norm: Norm,
        steps: int,
        targeted: bool = False,
        early_stop: bool = False,
        record_every: int | None = None,
        until_bound: bool = False,
    ) -> None:
        super().__init__(model, eps, norm, targeted)
        self.steps = steps
        self.early_stop = early_stop
        self.record_every = record_every
        self.until_bound = until_bound
        self.record: RoundRecord | None = None
        self.rounds_run: Tensor | None = None

    @property
    def recorded_rounds(self) -> tuple[int, ...]:
        """The rounds `record` holds when the loop runs all `steps` (with `until_bound` it may end sooner)."""
        return recorded_rounds(self.steps, self.record_every)

    def start(self, x: Tensor) -> Tensor:
        """The first iterate (before any round)."""
        return x

    @abstractmethod
    def step(self, x_adv: Tensor, x: Tensor, goal: Tensor, toward_goal: bool) -> Tensor:
        """One round on the still-active images: raise the loss on `goal` labels, or lower it if `toward_goal`."""

    def judge(self, x_adv: Tensor) -> Tensor:
        """The predictions an early stop is decided on: one call of the attacked model."""
        return predict(self.model, x_adv)

    def stops(self, x_adv: Tensor, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Which of these images stop after this round: at their first success (`early_stop`), or on the
        budget's boundary (`until_bound`)."""
        stopped = torch.zeros(len(x_adv), dtype=torch.bool, device=x_adv.device)
        if self.early_stop:
            stopped |= attack_succeeded(self.judge(x_adv), y, target)
        if self.until_bound:
            stopped |= distance(x_adv, x, self.norm) >= (1 - BOUNDARY_TOLERANCE) * self.eps
        return stopped

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        return self.run_rounds(x, self.start(x), y, target)

    def perturb_from(self, x: Tensor, start: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """The rounds from `start` (projected into the budget around `x`) instead of the usual first iterate."""
        return self.run_rounds(x, start, y, target)

    def run_rounds(self, x: Tensor, first: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        goal = target if target is not None else y
        x_adv = project(first, x, self.eps, self.norm)
        active = torch.ones(len(x), dtype=torch.bool, device=x.device)
        rounds_run = torch.zeros(len(x), dtype=torch.long, device=x.device)
        recorded, correct, success = [], [], []
        for round_ in range(1, self.steps + 1):
            index = active.nonzero().squeeze(1)
            if len(index):
                x_adv = x_adv.index_copy(0, index, self.step(x_adv[index], x[index], goal[index], target is not None))
                rounds_run[index] += 1
                stopped = self.stops(x_adv[index], x[index], y[index], None if target is None else target[index])
                active[index[stopped]] = False
            ended = self.until_bound and not active.any()
            if self.record_every is not None and (round_ % self.record_every == 0 or round_ == self.steps or ended):
                predictions = predict(self.model, x_adv)
                recorded.append(round_)
                correct.append(int((predictions == y).sum()))
                success.append(int(attack_succeeded(predictions, y, target).sum()))
            if ended:
                break
        if recorded:
            self.record = RoundRecord(tuple(recorded), torch.tensor(correct), torch.tensor(success), len(x))
        self.rounds_run = rounds_run if self.until_bound else None
        return x_adv


class NoAttack(Attack):
    """The identity: scores the protected images as they arrive (no budget of its own)."""

    needs_gradients: ClassVar[bool] = False

    def __init__(self, model: nn.Module | None) -> None:
        self.model = model
        self.eps, self.norm, self.targeted = 0.0, "Linf", False

    def __call__(self, x: Tensor, y: Tensor, target: Tensor | None = None, start: Tensor | None = None) -> Tensor:
        """What arrived, or the reversion's guess when there is one (sent as it is: no budget to keep)."""
        return x if start is None else start

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        return x
