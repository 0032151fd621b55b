"""`evaluate_on`: all images, or only those the bare victim classifies correctly (the second paper's protocol)."""

from pathlib import Path

import pytest
import torch
from torch import nn

from preempt.datasets.base import ImageDataset
from preempt.evaluation.selection import NothingToScoreError, select_images, victim_correct_mask


class FirstPixelSays(nn.Module):
    """Class 1 where the first pixel is bright, else class 0: which images it gets right is known."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = (x[:, 0, 0, 0] > 0.5).float() * self.scale
        return torch.stack([1 - bright, bright], dim=1)


def dataset() -> ImageDataset:
    images = torch.zeros(6, 1, 2, 2)
    images[[1, 2, 5], 0, 0, 0] = 1.0
    return ImageDataset(images, torch.tensor([0, 1, 0, 0, 1, 1]), num_classes=2, name="toy", offset=10)


def test_only_the_images_the_victim_gets_right_are_kept_with_their_own_indices() -> None:
    data = dataset()
    assert victim_correct_mask(FirstPixelSays(), data, batch_size=4).tolist() == [True, True, False, True, False, True]
    kept = select_images(data, "victim_correct", FirstPixelSays(), batch_size=4)
    assert len(kept) == 4 and kept.indices.tolist() == [10, 11, 13, 15]  # each keeps the index that seeds it
    assert kept.labels.tolist() == [0, 1, 0, 1] and torch.equal(kept.images, data.images[[0, 1, 3, 5]])
    assert select_images(data, "all", FirstPixelSays(), batch_size=4) is data


def test_a_victim_that_gets_nothing_right_is_refused_naming_the_fix() -> None:
    data = dataset()
    data.labels = 1 - FirstPixelSays()(data.images).argmax(dim=1)
    with pytest.raises(NothingToScoreError, match=r"none of the 6 images of toy.*evaluate_on=all"):
        select_images(data, "victim_correct", FirstPixelSays(), batch_size=4)


@pytest.mark.slow
def test_a_run_scores_only_the_victims_correct_images_and_records_how_many(
    tmp_path: Path, zoo_dir: Path, digits_models
) -> None:
    """Through src/main.py: the standard digits MLP misses some of 64 digits; the run scores the others, at clean
    accuracy 1, and results.json says how many of the slice it kept."""
    import json

    from conftest import main_arguments, run_main

    from preempt.datasets.digits import digits

    data = digits(n_samples=64)
    expected = int(victim_correct_mask(digits_models["digits_mlp"], data, batch_size=64).sum())
    assert 32 < expected < 64
    overrides = ("victim=digits_mlp", "evaluate_on=victim_correct", "defense=none", "attack=fgsm", "logger=none")
    assert run_main(main_arguments(tmp_path, zoo_dir, "dataset.n_samples=64", *overrides, "print_config=false")) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["run"]["n_samples"] == expected and results["run"]["n_offered"] == 64
    assert results["metrics"]["test/clean_acc"] == 1.0 and results["metrics"]["test/robust_acc"] < 1.0
