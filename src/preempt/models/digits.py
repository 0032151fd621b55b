"""The small digits networks the project trains itself (`preempt.zoo.digits_classifiers`): three architectures with
different inductive biases, so a defense can be made on one and must transfer to another."""

from __future__ import annotations

from torch import nn

NUM_CLASSES = 10
# Statistics of the 16×16 digits train split, used for the in-model normalization.
DIGITS_MEAN, DIGITS_STD = 0.305, 0.319


def cnn(image_size: int) -> nn.Module:
    """Strided 3×3 convolutions, no pooling."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * (image_size // 4) ** 2, 128),
        nn.ReLU(),
        nn.Linear(128, NUM_CLASSES),
    )


def lenet(image_size: int) -> nn.Module:
    """LeNet-style 5×5 convolutions with max pooling: a different inductive bias from `cnn`."""
    return nn.Sequential(
        nn.Conv2d(1, 20, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(50 * (image_size // 4) ** 2, 200),
        nn.ReLU(),
        nn.Linear(200, NUM_CLASSES),
    )


def mlp(image_size: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(image_size**2, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, NUM_CLASSES),
    )


ARCHITECTURES = {"cnn": cnn, "lenet": lenet, "mlp": mlp}
