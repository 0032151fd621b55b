"""Metrics of the test loop that torchmetrics does not ship."""

from __future__ import annotations

import torch
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
        self.correct += record.correct.to(self.correct.device)
        self.success += record.success.to(self.success.device)
        self.total += record.total

    def compute(self) -> dict[str, list]:
        total = self.total.clamp_min(1).double()
        return {
            "round": list(self.rounds),
            "accuracy": (self.correct / total).tolist(),
            "attack_success_rate": (self.success / total).tolist(),
        }
