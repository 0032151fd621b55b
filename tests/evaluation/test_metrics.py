"""The per-round curves (the second paper's Figure 3) summed over batches, as torchmetrics reduces over processes."""

import torch

from preempt.attacks.base import RoundRecord
from preempt.evaluation.metrics import RoundCurves


def test_round_curves_are_the_share_of_all_images_after_each_round() -> None:
    curves = RoundCurves(rounds=(5, 10))
    curves.update(RoundRecord((5, 10), correct=torch.tensor([3, 1]), success=torch.tensor([1, 3]), total=4))
    curves.update(RoundRecord((5, 10), correct=torch.tensor([2, 2]), success=torch.tensor([0, 1]), total=4))
    result = curves.compute()
    assert result == {"round": [5, 10], "accuracy": [5 / 8, 3 / 8], "attack_success_rate": [1 / 8, 4 / 8]}


def test_no_batch_gives_zeros_not_a_division_by_zero() -> None:
    assert RoundCurves(rounds=(1,)).compute()["accuracy"] == [0.0]
