"""The in-memory dataset every loader returns, and the one slicing rule every loader shares."""

import pytest
import torch

from preempt.datasets.base import ImageDataset
from preempt.datasets.digits import digits


def assert_images(data: ImageDataset, n: int, shape: tuple[int, int, int]) -> None:
    assert len(data) == n
    assert data.image_shape == shape
    assert data.images.dtype == torch.float32
    assert data.images.min() >= 0 and data.images.max() <= 1
    assert data.labels.dtype == torch.long
    assert ((data.labels >= 0) & (data.labels < data.num_classes)).all()


def test_slices_carry_their_source_indices() -> None:
    data = digits(n_samples=10, offset=50)
    images, labels, index = data[0]
    assert index.item() == 50
    full = digits(n_samples=None)
    assert torch.equal(images, full.images[50]) and labels == full.labels[50]


@pytest.mark.parametrize(
    ("n_samples", "offset", "message"), [(400, 0, "exceeds"), (10, 360, "outside"), (0, 0, "positive")]
)
def test_bad_slices_are_rejected(n_samples: int, offset: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        digits(n_samples=n_samples, offset=offset)
