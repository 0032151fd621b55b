"""The per-round curves (the second paper's Figure 3) and per-step curves (the Fast Preemption paper's Figure 8)
summed over batches, as torchmetrics reduces over processes."""

import pytest
import torch

from preempt.attacks.base import RoundRecord
from preempt.evaluation.metrics import RoundCurves, StepCurves, converged_step


def test_round_curves_are_the_share_of_all_images_after_each_round() -> None:
    curves = RoundCurves(rounds=(5, 10))
    curves.update(RoundRecord((5, 10), correct=torch.tensor([3, 1]), success=torch.tensor([1, 3]), total=4))
    curves.update(RoundRecord((5, 10), correct=torch.tensor([2, 2]), success=torch.tensor([0, 1]), total=4))
    result = curves.compute()
    assert result == {"round": [5, 10], "accuracy": [5 / 8, 3 / 8], "attack_success_rate": [1 / 8, 4 / 8]}


def test_no_batch_gives_zeros_not_a_division_by_zero() -> None:
    assert RoundCurves(rounds=(1,)).compute()["accuracy"] == [0.0]


def test_a_batch_whose_attack_ended_early_keeps_its_last_counts_for_the_later_rounds() -> None:
    """With until_bound a batch may stop at round 7 of 20: its examples no longer change after it."""
    curves = RoundCurves(rounds=(5, 10, 15, 20))
    curves.update(RoundRecord((5, 7), correct=torch.tensor([3, 2]), success=torch.tensor([1, 2]), total=4))
    curves.update(
        RoundRecord((5, 10, 15, 20), correct=torch.tensor([4, 3, 2, 1]), success=torch.tensor([0, 1, 2, 3]), total=4)
    )
    result = curves.compute()
    assert result["round"] == [5, 10, 15, 20]
    assert result["accuracy"] == [7 / 8, 5 / 8, 4 / 8, 3 / 8]
    assert result["attack_success_rate"] == [1 / 8, 3 / 8, 4 / 8, 5 / 8]


def test_step_curves_are_the_share_of_all_images_per_step() -> None:
    curves = StepCurves(steps=(2, 3))
    curves.update(torch.tensor([[True, False], [True, True]]), torch.tensor([[False, False], [True, False]]))
    curves.update(torch.tensor([[False, False], [True, True]]), torch.tensor([[False, False], [False, True]]))
    assert curves.compute() == {"step": [2, 3], "protected_clean_acc": [1 / 4, 1.0], "robust_acc": [0.0, 2 / 4]}


@pytest.mark.parametrize(
    ("values", "expected"),
    [([0.2, 0.5, 0.52, 0.5], 20), ([0.5, 0.5, 0.5, 0.5], 10), ([0.5, 0.2, 0.5, 0.3], 40), ([0.3, 0.5, 0.34, 0.3], 30)],
)
def test_a_curve_converges_where_it_stays_near_its_last_value(values: list[float], expected: int) -> None:
    """Within 0.05 of the last value from that step on: a curve that comes back near the end only counts from there."""
    assert converged_step([10, 20, 30, 40], values) == expected
