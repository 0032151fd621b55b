"""A5's robustifier (Frosio and Kautz, CVPR 2023): the sender runs a small network R that nudges each pixel.

x_rob = clamp(x + eps·(2σ(R(x̃)) − 1), 0, 1), with x̃ the image R reads (normalized by `mean` and `std` for the
authors' CIFAR-10 R) and eps per channel in [0,1] pixel units. The man in the middle then attacks x_rob against
the victim alone: R is the sender's, not part of the attacked graph.

`A5(checkpoint=...)` loads an R from a file (the authors' `robustifier_best`, three 5×5 convolutions
C→64→64→C with ReLUs, state dict under "state_dict"). Without a file, a run uses an R the project trains itself
on the dataset's training split against the backbone, cached like the digits zoo (`load_or_train_robustifier`,
or `python -m preempt.defenses.learn_robustifier`).

How that R is trained differs from the paper: A5 minimizes a certified (CROWN-IBP) bound from auto-LiRPA, and
auto-LiRPA's only release on PyPI (0.3) requires torch < 1.13 and fails to import with NumPy 2. Ours minimizes the
backbone's cross-entropy at PGD adversarial examples of x_rob instead (first-order: the PGD perturbation is a
constant), with A5's curriculum: the attack's eps ramps up from 0 while the loss moves from clean to adversarial.
The backbone stays frozen (A5's "R" recipe; its "RC" recipe also retrains the classifier).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from pydantic import ConfigDict, validate_call
from pydantic.dataclasses import dataclass
from torch import Tensor, nn

from preempt.attacks.approximator import training_dataset_config
from preempt.attacks.pgd import PGD
from preempt.checkpoints import CheckpointError, cache_path, load_cached, load_checkpoint, save_with_checksum
from preempt.constraints import ARBITRARY_TYPES, AtLeastOne, Eps, NonNegative, Norm, Positive
from preempt.defenses.base import Defense
from preempt.threat import validate_budget

log = logging.getLogger(__name__)

# Bump when the architecture or the training code changes, so stale cached robustifiers are not reused.
TRAINING_CODE_VERSION = 1
# Config keys that say where files live, not what a model is: left out of the cache key.
LOCATION_KEYS = ("cache_dir", "data_dir", "model_dir")


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
    `robustifier`, a run binds the project's trained R (`load_or_train_robustifier`) at test start.
    """

    norms: ClassVar[tuple[str, ...]] = ("Linf",)

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

    def __call__(self, x: Tensor, labels: Tensor) -> Tensor:
        if self.robustifier is None:
            raise RuntimeError(
                "A5 has no robustifier: set defense.checkpoint=<file>, or pass robustifier= (a run binds the "
                "project's trained one when the checkpoint is unset)"
            )
        channels = getattr(self.robustifier, "channels", x.shape[1])
        for name, values in (("eps", self.eps), ("mean", self.mean)):
            if isinstance(values, list) and len(values) not in (1, x.shape[1]):
                raise ValueError(f"defense.{name} has {len(values)} values for images of {x.shape[1]} channels")
        if channels != x.shape[1]:
            raise ValueError(
                f"the A5 robustifier takes {channels}-channel images and these have {x.shape[1]}: use a robustifier "
                f"made for this dataset (defense.checkpoint)"
            )
        with torch.no_grad():
            return robustify(self.robustifier, x.detach(), self.eps, self.mean, self.std)


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class RobustifierRecipe:
    """How the project trains R; the defaults are the one recipe a run and the command share."""

    epochs: AtLeastOne = 10
    batch_size: AtLeastOne = 64
    lr: Positive = 1e-3
    attack_steps: AtLeastOne = 7  # PGD steps of 2.5·eps/steps, one random start, against the frozen backbone
    warmup_epochs: NonNegative = 3  # the attack's eps ramps linearly from 0 to eps over these epochs
    seed: NonNegative = 0


def train_robustifier(
    backbone: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float,
    width: int,
    kernel_size: int,
    epochs: int,
    batch_size: int,
    lr: float,
    attack_steps: int,
    warmup_epochs: int,
    seed: int,
) -> Robustifier:
    """Adam on R's weights: loss f·CE(f_b(x_rob), y) + (1−f)·CE(f_b(x_rob + δ), y), δ a PGD attack of budget
    (1−f)·eps on x_rob, and f falling linearly from 1 to 0 over the warm-up (A5's schedule factor). Deterministic
    given `seed`, without touching the caller's random state."""
    with torch.random.fork_rng(devices=[images.device] if images.device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = Robustifier(images.shape[1], width, kernel_size).to(images.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        batches_per_epoch = -(-len(images) // batch_size)
        warmup_batches = warmup_epochs * batches_per_epoch
        done = 0
        for _ in range(epochs):
            for batch in torch.randperm(len(images), device=images.device).split(batch_size):
                clean_weight = max(0.0, 1 - (done + 1) / warmup_batches) if warmup_batches else 0.0
                x, y = images[batch], labels[batch]
                x_rob = robustify(model, x, eps)
                loss = clean_weight * F.cross_entropy(backbone(x_rob), y)
                if clean_weight < 1:
                    attack = PGD(backbone, eps * (1 - clean_weight), "Linf", steps=attack_steps)
                    delta = attack(x_rob, y) - x_rob.detach()
                    loss = loss + (1 - clean_weight) * F.cross_entropy(backbone(x_rob + delta), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                done += 1
    return model.eval().requires_grad_(False)


def _without_locations(config: dict) -> dict:
    return {key: value for key, value in config.items() if key not in LOCATION_KEYS}


def full_recipe(defense: A5, backbone_config: dict, dataset_config: dict, recipe: dict | None = None) -> dict:
    """Everything the trained weights depend on, as JSON reads it back (the cache key and the sidecar)."""
    full = {
        "backbone": _without_locations(backbone_config),
        "training_images": _without_locations(training_dataset_config(dataset_config)),
        "robustifier": {"eps": defense.eps, "width": defense.width, "kernel_size": defense.kernel_size},
        "training": dataclasses.asdict(RobustifierRecipe(**(recipe or {}))),
        "code_version": TRAINING_CODE_VERSION,
    }
    return json.loads(json.dumps(full, sort_keys=True))


def robustifier_path(full: dict, cache_dir: str | Path) -> Path:
    return cache_path(cache_dir, "robustifiers", full)


def load_or_train_robustifier(
    defense: A5,
    backbone: nn.Module,
    backbone_config: dict,
    dataset_config: dict,
    cache_dir: str | Path,
    recipe: dict | None = None,
) -> Robustifier:
    """The cached R for this backbone, training images, eps and recipe, trained and cached first if there is no
    intact one. Training uses the dataset's whole train split where its loader has one."""
    full = full_recipe(defense, backbone_config, dataset_config, recipe)
    path = robustifier_path(full, cache_dir)
    cached = load_cached(path, full, lambda saved: Robustifier(saved["channels"], defense.width, defense.kernel_size))
    if cached is not None:
        return cached
    training = instantiate(training_dataset_config(dataset_config))
    device = next(backbone.parameters()).device
    log.info("training the A5 robustifier on %d images against the backbone (cached at %s)", len(training), path)
    model = train_robustifier(
        backbone,
        training.images.to(device),
        training.labels.to(device),
        eps=defense.eps,
        width=defense.width,
        kernel_size=defense.kernel_size,
        **full["training"],
    )
    save_with_checksum(model.state_dict(), path, {"recipe": full, "channels": training.images.shape[1]})
    return model
