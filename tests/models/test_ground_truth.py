"""The ground-truth labeler (the paper's "GT" ablation): the true labels, for the classifier role only."""

import torch

from preempt.models import GroundTruth
from preempt.parts import LabelOnly, assign_labels


def test_it_labels_with_the_true_labels_whatever_the_images() -> None:
    y = torch.tensor([3, 1, 4])
    assert torch.equal(assign_labels(GroundTruth(), torch.rand(3, 1, 2, 2), y, torch.arange(3), 10), y)
    assert isinstance(GroundTruth(), LabelOnly) and GroundTruth.spec().input_shape is None
