"""A frozen classifier on [0,1] pixels, the one model interface the framework relies on."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class ImageShapeMismatchError(ValueError):
    """Images of the wrong size or channel count reached a model."""


class PixelClassifier(nn.Module):
    """Wraps a network so it takes [0,1] pixels, normalizes inside and never trains.

    The expected input shape is checked on every call, so a dataset/model mismatch fails with a message
    naming both instead of a shape error deep inside a convolution.
    """

    def __init__(
        self,
        network: nn.Module,
        name: str,
        input_shape: Sequence[int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        frozen: bool = True,
    ) -> None:
        super().__init__()
        self.network = network
        self.name = name
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.normalize = mean is not None
        if self.normalize:
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.frozen = False
        if frozen:
            self.freeze()

    def freeze(self) -> PixelClassifier:
        """Eval mode and no weight gradients from now on; only the project's own zoo trains before this."""
        self.frozen = True
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> PixelClassifier:
        """A frozen model stays in eval mode: BatchNorm statistics and dropout must not change in attacks."""
        return super().train(mode and not self.frozen)

    def check_input(self, x: Tensor) -> None:
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            expected = "×".join(map(str, self.input_shape))
            got = "×".join(map(str, x.shape[1:]))
            from preempt.datasets.base import datasets_hint

            raise ImageShapeMismatchError(
                f"model {self.name} expects images of shape {expected} (C×H×W) but got {got}. Pick a model made "
                f"for {got} images, or a dataset it takes ({datasets_hint(self.input_shape)})."
            )

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        if self.normalize:
            x = (x - self.mean) / self.std
        return self.network(x)
