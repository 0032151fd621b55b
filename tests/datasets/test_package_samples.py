"""The 20 real CIFAR-10 and 20 ImageNet test images the foolbox wheel ships, labelled by file name."""

import torch

from preempt.datasets.base import ImageDataset
from preempt.datasets.package_samples import cifar10_samples, imagenet_samples


def assert_images(data: ImageDataset, n: int, shape: tuple[int, int, int]) -> None:
    assert len(data) == n
    assert data.image_shape == shape
    assert data.images.dtype == torch.float32
    assert data.images.min() >= 0 and data.images.max() <= 1
    assert data.labels.dtype == torch.long
    assert ((data.labels >= 0) & (data.labels < data.num_classes)).all()


def test_cifar10_samples_take_labels_from_file_names() -> None:
    data = cifar10_samples()
    assert_images(data, 20, (3, 32, 32))
    assert data.labels[:4].tolist() == [3, 8, 8, 0]  # cifar10_00_3.png, cifar10_01_8.png, ...


def test_imagenet_samples_are_224_crops() -> None:
    data = imagenet_samples(n_samples=4, offset=2)
    assert_images(data, 4, (3, 224, 224))
    assert data.labels.tolist() == [438, 990, 949, 853]


def test_resized_photos_are_on_the_8bit_grid_so_a_sent_protection_keeps_its_budget() -> None:
    """A resize leaves pixels between the 256 levels; rounded back, a 4/255 protection sent as 8 bits stays
    within 4/255 of the photo (before: up to 4.5/255)."""
    from preempt.threat import to_8bit

    x = imagenet_samples(n_samples=2).images
    assert torch.equal(to_8bit(x), x)
    delta = (torch.rand_like(x) * 2 - 1) * 4 / 255
    assert (to_8bit((x + delta).clamp(0, 1)) - x).abs().max() <= 4 / 255 + 1e-6
