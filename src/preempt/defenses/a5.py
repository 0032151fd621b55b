"""A5's robustifier (Frosio and Kautz, CVPR 2023): the sender runs a small network R that nudges each pixel.

x_rob = clamp(x + eps·(2σ(R(x̃)) − 1), 0, 1), with x̃ the image R reads (normalized by `mean` and `std` for the
authors' CIFAR-10 R) and eps per channel in [0,1] pixel units. The man in the middle then attacks x_rob against
the victim alone: R is the sender's, not part of the attacked graph.

`A5(checkpoint=...)` loads an R from a file (the authors' `robustifier_best`, three 5×5 convolutions
C→64→64→C with ReLUs, state dict under "state_dict"). Without a file, a run binds an R the project trains itself
on the dataset's training split against the backbone, cached like the digits zoo (`preempt.zoo.robustifiers`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import validate_call
from torch import Tensor, nn

from preempt.checkpoints import CheckpointError, load_checkpoint
from preempt.parts.constraints import ARBITRARY_TYPES, AtLeastOne, Eps, Norm, Positive
from preempt.parts.defense import Defense
from preempt.threat import validate_budget


class Robustifier(nn.Module):
    """A5's CIFAR-10 robustifier: three same-size convolutions C→width→width→C with ReLUs between; its output
    is the pre-sigmoid z. The attribute name matches the authors' checkpoints, so their state dicts load as is."""

    def __init__(self, channels: int, width: int = 64, kernel_size: int = 5) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.convolutional_dnn = nn.Sequential(
            nn.Conv2d(channels, width, kernel_size, padding=padding),
            nn.ReLU(),
            nn.Conv2d(width, width, kernel_size, padding=padding),
            nn.ReLU(),
            nn.Conv2d(width, channels, kernel_size, padding=padding),
        )

    @property
    def channels(self) -> int:
        return self.convolutional_dnn[0].in_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.convolutional_dnn(x)


def _per_channel(values: float | Sequence[float], x: Tensor) -> Tensor:
    return torch.as_tensor(values, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)


def robustify(
    robustifier: nn.Module,
    x: Tensor,
    eps: float | Sequence[float],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Tensor:
    """A5's formula: x + eps·(2σ(R(x̃)) − 1) clamped to [0,1], with x̃ = (x − mean)/std when they are given."""
    seen = x if mean is None else (x - _per_channel(mean, x)) / _per_channel(std, x)
    return (x + _per_channel(eps, x) * (2 * torch.sigmoid(robustifier(seen)) - 1)).clamp(0.0, 1.0)


def read_robustifier(path: str | Path, width: int, kernel_size: int) -> Robustifier:
    """The robustifier in `path` (a state dict, or the authors' {"state_dict": ...}); the channel count is read
    from the file, and a file of another architecture fails naming the file and the shapes that differ."""
    path = Path(path)
    state = load_checkpoint(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    first = state.get("convolutional_dnn.0.weight") if isinstance(state, dict) else None
    if not isinstance(first, Tensor) or first.dim() != 4:
        keys = sorted(state)[:6] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"checkpoint {path} is not an A5 robustifier: it has no 4-d convolutional_dnn.0.weight (it holds {keys}). "
            f"Point defense.checkpoint at the authors' robustifier_best file"
        )
    model = Robustifier(first.shape[1], width, kernel_size)
    expected = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    found = {name: tuple(value.shape) for name, value in state.items() if isinstance(value, Tensor)}
    if expected != found:
        differences = [
            f"{name}: {found.get(name, 'missing')} in the file, {expected.get(name, 'none')} expected"
            for name in sorted(expected.keys() | found.keys())
            if expected.get(name) != found.get(name)
        ]
        raise CheckpointError(
            f"checkpoint {path} does not fit A5's robustifier of {first.shape[1]} channels, width {width} and "
            f"{kernel_size}×{kernel_size} kernels (defense.width, defense.kernel_size): " + "; ".join(differences)
        )
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


class A5(Defense):
    """x_rob = clamp(x + eps·(2σ(R(x̃)) − 1), 0, 1) with the robustifier R loaded from `checkpoint`, or given.

    eps: A5's eps_def, one value or one per channel, in [0,1] pixel units (the Fast Preemption paper runs A5 at
    the threat's eps). mean, std: the normalization R reads its input in (the authors' CIFAR-10 R: CIFAR-10's
    statistics); unset, R reads [0,1] pixels, as the project's own R does. Without `checkpoint` and
    `robustifier`, a run binds the project's trained R (`preempt.zoo.robustifiers`) at test start.
    """

    bound: ClassVar[tuple[str, ...]] = ("robustifier",)
    norms: ClassVar[tuple[str, ...]] = ("Linf",)

    @classmethod
    def models_to_bind(cls, settings: Mapping[str, Any]) -> tuple[str, ...]:
        """The project's R only when no checkpoint gives one."""
        return () if settings.get("checkpoint") is not None else super().models_to_bind(settings)

    @validate_call(config=ARBITRARY_TYPES)
    def __init__(
        self,
        eps: Eps | list[Eps],
        norm: Norm = "Linf",
        checkpoint: str | None = None,
        width: AtLeastOne = 64,
        kernel_size: AtLeastOne = 5,
        mean: list[float] | None = None,
        std: list[Positive] | None = None,
        robustifier: nn.Module | None = None,
    ) -> None:
        if norm not in self.norms:
            raise ValueError(
                f"A5's robustifier moves each pixel by at most eps (an Linf box), not within a {norm} ball: set "
                f"threat.norm=Linf, or pick defense=fast_preemption or defense=bilevel for {norm}"
            )
        for value in eps if isinstance(eps, list) else [eps]:
            validate_budget(value, norm)
        if (mean is None) != (std is None) or (mean is not None and len(mean) != len(std)):
            raise ValueError(f"mean={mean} and std={std}: give both, one value per channel, or neither")
        if checkpoint is None and robustifier is None:  # the project's own R will be bound: it has one recipe
            if mean is not None:
                raise ValueError(
                    "defense.mean and defense.std describe a loaded robustifier's input, and the project's own "
                    "robustifier reads [0,1] pixels: unset them, or set defense.checkpoint"
                )
            if isinstance(eps, list):
                raise ValueError(
                    "the project's robustifier is trained with one eps for all channels: set defense.eps to one "
                    "value, or set defense.checkpoint"
                )
        self.eps = eps
        self.mean, self.std = mean, std
        self.width, self.kernel_size = width, kernel_size
        self.robustifier = robustifier if checkpoint is None else read_robustifier(checkpoint, width, kernel_size)

    def check_fits(self, image_shape: tuple[int, ...]) -> None:
        """Per-channel settings and R's channels must match the images'."""
        channels = image_shape[0]
        for name, values in (("eps", self.eps), ("mean", self.mean)):
            if isinstance(values, list) and len(values) not in (1, channels):
                raise ValueError(f"defense.{name} has {len(values)} values for images of {channels} channels")
        expected = getattr(self.robustifier, "channels", channels)
        if expected != channels:
            raise ValueError(
                f"the A5 robustifier takes {expected}-channel images and these have {channels}: use a robustifier "
                f"made for this dataset (defense.checkpoint)"
            )

    def __call__(self, x: Tensor, labels: Tensor) -> Tensor:
        if self.robustifier is None:
            raise RuntimeError(
                "A5 has no robustifier: set defense.checkpoint=<file>, or pass robustifier= (a run binds the "
                "project's trained one when the checkpoint is unset)"
            )
        self.check_fits(tuple(x.shape[1:]))
        with torch.no_grad():
            return robustify(self.robustifier, x.detach(), self.eps, self.mean, self.std)
