"""The digits zoo's three architectures: logits for 10 classes at any image size divisible by 4."""

import pytest
import torch

from preempt.models.digits import ARCHITECTURES, NUM_CLASSES


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
@pytest.mark.parametrize("size", [16, 28])
def test_every_architecture_gives_one_logit_per_class(architecture: str, size: int) -> None:
    network = ARCHITECTURES[architecture](size)
    assert network(torch.rand(3, 1, size, size)).shape == (3, NUM_CLASSES)


def test_the_architectures_differ_in_their_parameters() -> None:
    counts = {name: sum(p.numel() for p in build(16).parameters()) for name, build in ARCHITECTURES.items()}
    assert len(set(counts.values())) == len(counts)
