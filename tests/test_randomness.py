"""Per-sample random streams: a sample draws the same numbers whatever batch it is in."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from preempt import randomness
from preempt.commands.evaluate import evaluate
from preempt.randomness import per_sample_streams
from preempt.threat import random_uniform


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_a_samples_draws_do_not_depend_on_its_batch(norm: str) -> None:
    copies = 5
    with per_sample_streams(7, torch.tensor([3, 4, 5])):
        batch = random_uniform(torch.zeros(3 * copies, 1, 4, 4), 0.3, norm, rows_per_sample=copies)
    with per_sample_streams(7, torch.tensor([5])):
        alone = random_uniform(torch.zeros(copies, 1, 4, 4), 0.3, norm, rows_per_sample=copies)
    assert torch.equal(batch[2 * copies :], alone)
    assert not torch.equal(batch[:copies], alone), "each sample has its own stream"
    with per_sample_streams(8, torch.tensor([5])):
        assert not torch.equal(random_uniform(torch.zeros(copies, 1, 4, 4), 0.3, norm, copies), alone)


def test_outside_a_block_draws_are_torchs_own_as_before() -> None:
    like = torch.zeros(6, 2)
    torch.manual_seed(0)
    expected = (torch.rand_like(like), torch.randn_like(like), torch.randint(1, 10, (6, 2)))
    torch.manual_seed(0)
    drawn = (randomness.uniform(like), randomness.normal(like), randomness.integers(1, 10, like))
    assert all(torch.equal(a, b) for a, b in zip(expected, drawn, strict=True))


def test_a_layout_that_does_not_match_the_samples_is_refused() -> None:
    with per_sample_streams(0, torch.tensor([0, 1])), pytest.raises(ValueError, match="rows_per_sample"):
        randomness.uniform(torch.zeros(6, 3), rows_per_sample=2)


@pytest.mark.slow
def test_per_sample_randomness_gives_the_same_metrics_at_batch_16_and_128(
    compose_config, tmp_path: Path, digits_models
) -> None:
    """Fast Preemption's starts, PGD's start and random targets all per sample: the batch size changes speed only."""

    def metrics(batch_size: int) -> dict[str, float]:
        cfg = compose_config(
            "randomness=per_sample", f"batch_size={batch_size}", "dataset.n_samples=40", "attack=pgd",
            "attack.targeted=true", "logger=none",
        )  # fmt: skip
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / str(batch_size))
        found = evaluate(cfg)["metrics"]
        return {key: value for key, value in found.items() if "seconds" not in key}

    small, large = metrics(16), metrics(128)
    accuracies = [key for key in small if key.endswith(("_acc", "success_rate"))]
    assert len(accuracies) >= 5 and {key: small[key] for key in accuracies} == {key: large[key] for key in accuracies}
    assert small == pytest.approx(large, rel=1e-6), "means (SSIM) differ only by the order of float sums"
    assert 0 < small["test/robust_acc"] < small["test/protected_clean_acc"], "a real attack on a real protection"
