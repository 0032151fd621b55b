"""Metrics of the test loop that torchmetrics does not ship."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from preempt.attacks.base import RoundRecord


class RoundCurves(Metric):
    """Accuracy and attack success rate after each recorded round of an iterative attack, over all batches
    and processes (the second paper's Figure 3)."""

    full_state_update = False

    def __init__(self, rounds: tuple[int, ...]) -> None:
        super().__init__()
        self.rounds = rounds
        self.add_state("correct", default=torch.zeros(len(rounds), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("success", default=torch.zeros(len(rounds), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, record: RoundRecord) -> None:
        """A batch's counts at each of these rounds. An attack that ended before `steps` (`until_bound`) keeps
        its examples from its last round on, so that round's counts stand for the later ones it did not run."""
        at = torch.searchsorted(torch.tensor(record.rounds), torch.tensor(self.rounds), right=True) - 1
        self.correct += record.correct[at].to(self.correct.device)
        self.success += record.success[at].to(self.success.device)
        self.total += record.total

    def compute(self) -> dict[str, list]:
        total = self.total.clamp_min(1).double()
        return {
            "round": list(self.rounds),
            "accuracy": (self.correct / total).tolist(),
            "attack_success_rate": (self.success / total).tolist(),
        }


CONVERGENCE_TOLERANCE = 0.05  # five points of accuracy: one image in twenty


def converged_step(steps: list[int], values: list[float], tolerance: float = CONVERGENCE_TOLERANCE) -> int:
    """The first kept step from which the curve stays within `tolerance` of its last value (Figure 8's "converges
    fast": a forward cascade should get there in fewer steps than backward steps alone)."""
    last = values[-1]
    converged = steps[-1]
    for step, value in zip(reversed(steps), reversed(values), strict=True):
        if abs(value - last) > tolerance:
            break
        converged = step
    return converged


class StepCurves(Metric):
    """The victim's accuracy on the defense's iterate after each kept learning step, as sent and after the run's
    attack, over all batches and processes (the Fast Preemption paper's Figure 8)."""

    full_state_update = False

    def __init__(self, steps: tuple[int, ...]) -> None:
        super().__init__()
        self.steps = steps
        self.add_state("clean_correct", default=torch.zeros(len(steps), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("robust_correct", default=torch.zeros(len(steps), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, clean_correct: Tensor, robust_correct: Tensor) -> None:
        """Whether the victim is right on each image of the batch, per kept step (steps × images booleans)."""
        self.clean_correct += clean_correct.sum(dim=1).to(self.clean_correct.device)
        self.robust_correct += robust_correct.sum(dim=1).to(self.robust_correct.device)
        self.total += clean_correct.shape[1]

    def compute(self) -> dict[str, list]:
        total = self.total.clamp_min(1).double()
        return {
            "step": list(self.steps),
            "protected_clean_acc": (self.clean_correct / total).tolist(),
            "robust_acc": (self.robust_correct / total).tolist(),
        }
