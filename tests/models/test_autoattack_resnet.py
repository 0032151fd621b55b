"""The standard CIFAR-10 ResNet-18 the pyautoattack wheel ships, loaded offline."""

from conftest import accuracy


def test_shipped_resnet18_is_accurate_on_clean_samples(resnet18, cifar_batch) -> None:
    x, y = cifar_batch
    assert accuracy(resnet18, x, y) >= 0.85


def test_its_architecture_is_importable_by_module_name(resnet18) -> None:
    """torch.compile (dynamo, torch 2.11) imports a traced function's module by name: the architecture loaded from
    the wheel's examples folder must be a registered module (`speed.compile` and `speed.cuda_graphs`)."""
    import importlib

    layer = next(module for module in resnet18.modules() if type(module).__name__ == "ResNet")
    assert importlib.import_module(type(layer).__module__) is not None
