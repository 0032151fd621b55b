"""Adaptive attacks on a receiver-side defense g (Athalye, Carlini & Wagner): BPDA, EOT and BPDA+EOT.

The three are one gradient-descent attack with two independent gradient estimators, so `attack=bpda`,
`attack=eot` and `attack=bpda_eot` are three settings files of this one class:
- BPDA runs the forward pass through g and the backward pass through an approximation g′, which a
  non-differentiable g needs. `approximation=partial` replaces only g's non-differentiable stages by the
  identity and differentiates the rest (Athalye et al.'s definition: `InputTransform.approximated`);
  `identity` replaces the whole g by the identity (the second paper's authors' code); `learned` by a trained
  auto-encoder (`preempt.attacks.approximator`);
- EOT averages the gradient over `eot_samples` draws of a random g (the second paper uses 30).
Each round moves the image by `lr` times the raw loss gradient (the paper's learning rate 0.1, as in Athalye
et al.'s code) and projects it into the budget; with `early_stop` an image stops at its first success, and with
`until_bound` at the budget's boundary too, `steps` being only a cap (the paper continues its attacks "until
the images with perturbations reach the l2 bound"). Raw gradients vanish on confidently classified images
(saturated softmax); `step_size` swaps in the FGSM step of PGD (the norm's steepest direction, a fixed length),
which does not depend on the gradient's scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import validate_call
from torch import Tensor, nn

from preempt.attacks.base import IterativeAttack, predict
from preempt.attacks.fgsm import fgsm_step, loss_gradient
from preempt.parts import InputTransform
from preempt.parts.constraints import ARBITRARY_TYPES, AtLeastOne, Eps, Norm, Positive
from preempt.receiver_defenses.base import ReceiverDefended
from preempt.threat import project


class StraightThrough(nn.Module):
    """victim(g(x)) in the forward pass, victim(g′(x)) in the backward pass: g′(x) + (g(x) − g′(x)).detach()."""

    def __init__(self, victim: nn.Module, transform: InputTransform, approximation: nn.Module) -> None:
        super().__init__()
        self.victim = victim
        self.transform = transform
        self.approximation = approximation

    def forward(self, x: Tensor) -> Tensor:
        approximated = self.approximation(x)
        return self.victim(approximated + (self.transform(x) - approximated).detach())


class PartiallyApproximated(nn.Module):
    """victim(g(x)) in the forward pass; in the backward pass, g's differentiable stages as they are and the
    identity through its non-differentiable ones (`InputTransform.approximated`)."""

    def __init__(self, victim: nn.Module, transform: InputTransform) -> None:
        super().__init__()
        self.victim = victim
        self.transform = transform

    def forward(self, x: Tensor) -> Tensor:
        return self.victim(self.transform.approximated(x))


class AdaptiveAttack(IterativeAttack):
    """`steps` rounds of x ← Π(x ∓ lr·∇ₓ loss) (or FGSM steps of `step_size`), with BPDA (`approximation`)
    and/or EOT (`eot_samples`); with `until_bound`, at most `steps`, and `rounds_run` holds each image's count.

    Without a receiver-side defense (or with `threat.oblivious`) there is no g to approximate or average:
    the attack is then plain gradient descent on the victim. `approximator` (the learned g′) is bound at test
    start from the cache (`python -m preempt.commands.learn_approximator` trains it; a run trains it on first use).
    """

    bound: ClassVar[tuple[str, ...]] = ("model", "approximator")

    @classmethod
    def models_to_bind(cls, settings: Mapping[str, Any]) -> tuple[str, ...]:
        """The learned g′ only when the settings ask for it."""
        needed = super().models_to_bind(settings)
        return needed if settings.get("approximation") == "learned" else tuple(n for n in needed if n != "approximator")

    @classmethod
    def method_name(cls, settings: Mapping[str, Any]) -> str:
        """The gradient estimators it uses (BPDA, EOT, BPDA+EOT), as the second paper names its attacks."""
        approximation = settings.get("approximation", "partial")
        estimators = ["BPDA"] if approximation != "none" else []
        estimators += ["EOT"] if settings.get("eot_samples", 1) > 1 else []
        name = "+".join(estimators) or "GradientDescent"
        return name + (" (learned g′)" if approximation == "learned" else "")

    @validate_call(config=ARBITRARY_TYPES)
    def __init__(
        self,
        model: nn.Module | None,
        eps: Eps,
        norm: Norm = "normalized_L2",
        steps: AtLeastOne = 50,
        lr: Positive = 0.1,
        step_size: Positive | None = None,
        approximation: Literal["none", "partial", "identity", "learned"] = "partial",
        eot_samples: AtLeastOne = 1,
        targeted: bool = True,
        early_stop: bool = True,
        record_every: AtLeastOne | None = 1,
        until_bound: bool = False,
        approximator: nn.Module | None = None,
    ) -> None:
        super().__init__(model, eps, norm, steps, targeted, early_stop, record_every, until_bound)
        self.lr = lr
        self.step_size = step_size
        self.approximation = approximation
        self.eot_samples = eot_samples
        self.approximator = approximator
        # BPDA brings its own gradient for g; without it the attack needs g's true gradient.
        self.needs_gradients = approximation == "none"
        self._gradient_model: nn.Module | None = None

    @property
    def gradient_model(self) -> nn.Module:
        if self._gradient_model is None:
            self._gradient_model = self._approximated() if self.approximation != "none" else self.model
        return self._gradient_model

    def _approximated(self) -> nn.Module:
        if not isinstance(self.model, ReceiverDefended):
            return self.model
        if self.approximation == "partial":
            return PartiallyApproximated(self.model.victim, self.model.transform)
        if self.approximation == "identity":
            return StraightThrough(self.model.victim, self.model.transform, nn.Identity())
        if self.approximator is None:
            raise ValueError(
                "attack.approximation=learned needs the trained approximator: run through src/main.py (which trains "
                "and caches it on first use), or pass approximator= (python -m preempt.commands.learn_approximator)"
            )
        return StraightThrough(self.model.victim, self.model.transform, self.approximator)

    def judge(self, x_adv: Tensor) -> Tensor:
        """With EOT, the most frequent prediction over `eot_samples` draws of g: an image stops when it fools
        the receiver in expectation, not on one lucky draw."""
        if self.draws == 1:
            return super().judge(x_adv)
        draws = predict(self.model, x_adv.repeat_interleave(self.draws, dim=0))
        return draws.view(len(x_adv), self.draws).mode(dim=1).values

    @property
    def draws(self) -> int:
        """The draws of g each gradient and verdict averages: `eot_samples` through a random g; one otherwise,
        where every draw would be the same (a deterministic g, no g, or an oblivious attack on the bare victim)."""
        random = isinstance(self.model, ReceiverDefended) and self.model.transform.random
        return self.eot_samples if random else 1

    def step(self, x_adv: Tensor, x: Tensor, goal: Tensor, toward_goal: bool) -> Tensor:
        if self.step_size is not None:
            model, samples = self.gradient_model, self.draws
            return fgsm_step(model, x_adv, goal, self.step_size, x, self.eps, self.norm, toward_goal, samples)
        grad = loss_gradient(self.gradient_model, x_adv, goal, self.draws)
        return project(x_adv - self.lr * grad if toward_goal else x_adv + self.lr * grad, x, self.eps, self.norm)
