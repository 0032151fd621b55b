"""The standard CIFAR-10 ResNet-18 the pyautoattack wheel ships, loaded offline."""

from conftest import accuracy


def test_shipped_resnet18_is_accurate_on_clean_samples(resnet18, cifar_batch) -> None:
    x, y = cifar_batch
    assert accuracy(resnet18, x, y) >= 0.85
