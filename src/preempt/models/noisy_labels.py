"""A deliberately poor classifier for the reversion protocol (Fast Preemption paper, Section IV-C).

Reversion can only be seen when protection changes predictions: labeling a fraction of the sender's images wrong
makes the protection push those images towards a wrong class, so the protected clean accuracy drops below the
original's, and a reversion that works brings it back up.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import torch
from annotated_types import Ge, Le
from hydra.utils import get_object
from pydantic import validate_call
from torch import Tensor, nn

from preempt.models.ground_truth import GroundTruth
from preempt.parts.constraints import ARBITRARY_TYPES, NonNegative
from preempt.parts.model import LabelOnly, ModelSpec, assign_labels, spec_of

Fraction = Annotated[float, Ge(0), Le(1)]
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer: a bijection on 64-bit integers whose outputs look uniform, element-wise."""
    values = values ^ (values >> np.uint64(30))
    values = values * np.uint64(0xBF58476D1CE4E5B9)
    values = values ^ (values >> np.uint64(27))
    values = values * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def per_sample_draws(seed: int, index: Tensor, stream: int) -> np.ndarray:
    """Uniform 64-bit draws keyed by (seed, sample index, stream): the same sample gets the same draw in any batch,
    order or process, with no generator state to carry."""
    with np.errstate(over="ignore"):
        keys = index.detach().cpu().numpy().astype(np.uint64)
        counter = np.uint64(seed) * np.uint64(4) + np.uint64(stream)
        return _mix(_mix(keys * _GOLDEN + counter) + _GOLDEN)


def _spec(wrapped: dict | None = None, **settings: Any) -> ModelSpec:
    """The wrapped classifier's input shape and class count (any, for the ground truth)."""
    if wrapped is None:
        return ModelSpec(input_shape=None, num_classes=None)
    inner = {key: value for key, value in wrapped.items() if not key.startswith("_")}
    return spec_of(get_object(wrapped["_target_"]), inner) or ModelSpec(input_shape=None, num_classes=None)


class NoisyLabels(nn.Module, LabelOnly):
    """The wrapped labeler's labels, made wrong on each sample with probability `wrong_fraction`.

    Which samples are wrong and the wrong label (uniform among the classes other than the wrapped labeler's) are
    fixed by `seed` and the sample's dataset index, so a run repeats at any batch size and on any number of
    processes, and the man in the middle who has this classifier (the white-box reversion) gets the same labels
    for the same picture. Wraps the ground truth by default, or any classifier (`model@classifier.wrapped=...`).
    """

    spec = staticmethod(_spec)

    @validate_call(config=ARBITRARY_TYPES)
    def __init__(
        self, wrapped: nn.Module | GroundTruth | None = None, wrong_fraction: Fraction = 0.5, seed: NonNegative = 0
    ) -> None:
        super().__init__()
        if isinstance(wrapped, NoisyLabels):
            raise ValueError("classifier.wrapped is noisy_labels itself: wrap ground_truth or a classifier model")
        self.wrapped = wrapped if wrapped is not None else GroundTruth()
        self.wrong_fraction = wrong_fraction
        self.seed = seed

    def labels(self, x: Tensor, y: Tensor, index: Tensor, num_classes: int) -> Tensor:
        labels = assign_labels(self.wrapped, x, y, index, num_classes)
        return corrupt_labels(labels, index, num_classes, self.wrong_fraction, self.seed)


def corrupt_labels(labels: Tensor, index: Tensor, num_classes: int, wrong_fraction: float, seed: int) -> Tensor:
    """`labels` with the samples drawn (probability `wrong_fraction`) moved to a uniformly drawn other class."""
    if num_classes < 2:
        raise ValueError(f"a wrong label needs at least two classes, and there are {num_classes}")
    # The top 53 bits of a draw as a uniform float in [0,1), exactly as numpy's own doubles are made.
    chance = (per_sample_draws(seed, index, stream=0) >> np.uint64(11)).astype(np.float64) / 2.0**53
    shift = (per_sample_draws(seed, index, stream=1) % np.uint64(num_classes - 1)).astype(np.int64) + 1
    wrong = torch.from_numpy(chance < wrong_fraction).to(labels.device)
    shifted = (labels + torch.from_numpy(shift).to(labels.device)) % num_classes
    return torch.where(wrong, shifted, labels)
