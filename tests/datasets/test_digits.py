"""scikit-learn's real handwritten digits: a fixed stratified split, upsampled so SSIM's window fits."""

import torch

from preempt.datasets.base import ImageDataset
from preempt.datasets.digits import digits, split_indices


def assert_images(data: ImageDataset, n: int, shape: tuple[int, int, int]) -> None:
    assert len(data) == n
    assert data.image_shape == shape
    assert data.images.dtype == torch.float32
    assert data.images.min() >= 0 and data.images.max() <= 1
    assert data.labels.dtype == torch.long
    assert ((data.labels >= 0) & (data.labels < data.num_classes)).all()


def test_digits_train_and_test_splits_are_disjoint() -> None:
    from sklearn.datasets import load_digits

    splits = split_indices(torch.tensor(load_digits().target))
    train, test = set(splits["train"].tolist()), set(splits["test"].tolist())
    assert not train & test
    assert len(train | test) == 1797 and len(test) == 360


def test_digits_are_upsampled_real_images() -> None:
    data = digits(split="test", image_size=16, n_samples=None)
    assert_images(data, 360, (1, 16, 16))
    assert len(data.labels.unique()) == 10
