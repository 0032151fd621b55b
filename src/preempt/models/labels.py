"""The sender's labels: a classifier's predictions, or a label-only model that needs the truth or the sample."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn


class LabelOnly(ABC):
    """A classifier-role model that outputs labels, not logits: it has no gradients, so it can only label the
    sender's images (never be a backbone or a victim). It may read the true labels and the samples' indices."""

    @abstractmethod
    def labels(self, x: Tensor, y: Tensor, index: Tensor, num_classes: int) -> Tensor:
        """Labels for images `x` whose true labels are `y` and dataset indices `index`."""


def assign_labels(classifier: nn.Module | LabelOnly, x: Tensor, y: Tensor, index: Tensor, num_classes: int) -> Tensor:
    """What `classifier` says about `x`: a label-only model's labels, or a model's top class."""
    if isinstance(classifier, LabelOnly):
        return classifier.labels(x, y, index, num_classes)
    with torch.no_grad():
        return classifier(x).argmax(dim=1)
