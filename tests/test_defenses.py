"""Fast Preemption's invariants and its purpose, on random and real batches."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from preempt.defenses.base import NoDefense
from preempt.defenses.fast_preemption import FastPreemption
from preempt.models import PixelClassifier
from preempt.threat import distance


def tiny_backbone(channels: int = 3) -> PixelClassifier:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10))
    return PixelClassifier(network, name="tiny", input_shape=(channels, 8, 8))


def cross_entropy(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return F.cross_entropy(model(x), labels).item()


def assert_valid_protection(x: torch.Tensor, protected: torch.Tensor, eps: float, norm: str) -> None:
    assert protected.shape == x.shape
    assert protected.dtype == x.dtype
    assert protected.min() >= 0 and protected.max() <= 1
    assert (distance(protected, x, norm) <= eps + 1e-5).all()
    assert not protected.requires_grad


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_invariants_on_random_batch(norm: str) -> None:
    backbone = tiny_backbone()
    x = torch.rand(6, 3, 8, 8)
    labels = torch.randint(0, 10, (6,))
    eps = 8 / 255 if norm == "Linf" else 0.5
    protected = FastPreemption(backbone, eps=eps, norm=norm, n_samples=5)(x, labels)
    assert_valid_protection(x, protected, eps, norm)
    assert not torch.equal(protected, x)


def test_invariants_and_lower_loss_on_real_digits(digits_models, digits_batch) -> None:
    x, _ = digits_batch
    classifier, backbone = digits_models["digits_cnn"], digits_models["digits_cnn_at"]
    with torch.no_grad():
        labels = classifier(x).argmax(dim=1)
    protected = FastPreemption(backbone, eps=0.2)(x, labels)
    assert_valid_protection(x, protected, 0.2, "Linf")
    assert cross_entropy(backbone, protected, labels) < 0.5 * cross_entropy(backbone, x, labels)


def test_invariants_and_lower_loss_on_real_cifar10(resnet18, cifar_batch) -> None:
    x, _ = cifar_batch
    x = x[:8]
    with torch.no_grad():
        labels = resnet18(x).argmax(dim=1)
    protected = FastPreemption(resnet18, eps=8 / 255, n_samples=4)(x, labels)
    assert_valid_protection(x, protected, 8 / 255, "Linf")
    assert cross_entropy(resnet18, protected, labels) < cross_entropy(resnet18, x, labels)


def test_n_random_starts_are_one_batched_pass_per_step() -> None:
    backbone = tiny_backbone()
    batch_sizes: list[int] = []
    backbone.register_forward_hook(lambda module, inputs, output: batch_sizes.append(len(inputs[0])))
    x = torch.rand(3, 3, 8, 8)
    FastPreemption(backbone, eps=0.03, forward_steps=2, backward_steps=3, n_samples=7)(x, torch.zeros(3).long())
    assert batch_sizes == [3 * 7] * 5


def test_steps_follow_algorithm_1_directions() -> None:
    """Forward steps alone lower the backbone's loss; backward steps alone raise the FGSM loss they reverse."""
    backbone = tiny_backbone()
    x = torch.rand(32, 3, 8, 8)
    labels = torch.randint(0, 10, (32,))
    forward_only = FastPreemption(backbone, eps=0.1, forward_steps=3, backward_steps=0)(x, labels)
    assert cross_entropy(backbone, forward_only, labels) < cross_entropy(backbone, x, labels)
    torch.manual_seed(1)
    reversed_attack = FastPreemption(backbone, eps=0.1, forward_steps=0, backward_steps=3)(x, labels)
    assert cross_entropy(backbone, reversed_attack, labels) < cross_entropy(backbone, x, labels)


def test_same_seed_same_protection() -> None:
    backbone = tiny_backbone()
    x, labels = torch.rand(4, 3, 8, 8), torch.arange(4)
    defense = FastPreemption(backbone, eps=0.05, n_samples=3)
    torch.manual_seed(7)
    first = defense(x, labels)
    torch.manual_seed(7)
    assert torch.equal(first, defense(x, labels))


def test_no_defense_is_identity() -> None:
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(NoDefense()(x, torch.zeros(2).long()), x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eps": 8.0}, "8/255"),
        ({"eps": 0.03, "forward_steps": 0, "backward_steps": 0}, "at least"),
        ({"eps": 0.03, "n_samples": 0}, "n_samples"),
        ({"eps": 0.03, "eta": 0}, "eta"),
    ],
)
def test_bad_settings_fail_with_the_fix(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FastPreemption(tiny_backbone(), **kwargs)
