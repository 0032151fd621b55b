"""A learned differentiable stand-in for a receiver-side transform g: the backward pass of the adaptive BPDA attack.

BPDA (Athalye et al. 2018) runs the forward pass through g and the backward pass through an approximation of it;
the naive approximation is the identity. Raff et al. (2019), and the preprocessing-defense paper after them, fit
a small DenseNet auto-encoder to g instead and report how close it gets (normalized L2 and SSIM against g's output).

The auto-encoder is trained once per (g, training images, recipe, training code) and cached under
`<cache_dir>/approximators/<hash>.pt`, as the digits zoo caches its models: the file name is a hash of the full
recipe, a JSON sidecar records the recipe and the file's sha256, and a cut-short or altered file is retrained.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import get_object, instantiate
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass
from torch import Tensor, nn
from torchmetrics.functional.image import structural_similarity_index_measure

from preempt.checkpoints import cache_path, load_cached, save_with_checksum
from preempt.constraints import AtLeastOne, NonNegative, Positive
from preempt.receiver_defenses.base import InputTransform
from preempt.threat import distance

log = logging.getLogger(__name__)

# Bump when the architecture or the training code changes, so stale cached approximators are not reused.
TRAINING_CODE_VERSION = 1


class DenseAutoEncoder(nn.Module):
    """`layers` 3×3 convolutions, each fed the input and every earlier layer's output (DenseNet's concatenation),
    then a 1×1 convolution to a shift s = tanh(·) in (−1,1) per pixel and channel that moves the pixel the
    fraction s of the way to white (s > 0) or −s of the way to black (s < 0).

    Why this output: for x in [0,1] it stays in [0,1] without squashing x itself, and it is continuous and
    piecewise smooth, like the ReLUs inside, so BPDA always gets a gradient. A squashed residual (sigmoid or
    soft clamp of x + r) reaches 0 or 1, where many pixels of real images sit, only where its slope is nearly
    flat: BPDA's gradients would vanish there, and training falls into that flat region (an AE of sigmoid
    fractions collapsed to the exact identity on bit-depth reduction). Here the identity is s = 0, tanh's
    linear middle; the last convolution starts at zero, so the untrained AE is the identity (the naive BPDA
    approximation). Fully convolutional with same-size padding, so it takes images of any size; no
    downsampling, since g's details are pixel-sized.
    """

    def __init__(self, channels: int, layers: int = 6, growth: int = 16) -> None:
        super().__init__()
        self.dense = nn.ModuleList(
            nn.Conv2d(channels + i * growth, growth, kernel_size=3, padding=1) for i in range(layers)
        )
        self.shift = nn.Conv2d(channels + layers * growth, channels, kernel_size=1)
        nn.init.zeros_(self.shift.weight)
        nn.init.zeros_(self.shift.bias)

    def forward(self, x: Tensor) -> Tensor:
        features = x
        for conv in self.dense:
            features = torch.cat([features, F.relu(conv(features))], dim=1)
        shift = torch.tanh(self.shift(features))
        return x + shift * torch.where(shift >= 0, 1 - x, x)


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ApproximatorRecipe:
    """How an approximator is trained; the defaults are the one recipe a run and the command share."""

    layers: AtLeastOne = 6
    growth: AtLeastOne = 16
    steps: AtLeastOne = 600
    batch_size: AtLeastOne = 64
    lr: Positive = 3e-3
    seed: NonNegative = 0


DEFAULT_RECIPE = ApproximatorRecipe()


def train_approximator(
    transform: InputTransform,
    images: Tensor,
    *,
    layers: int,
    growth: int,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> DenseAutoEncoder:
    """Fit AE(x) to g(x) by MSE on random minibatches of `images`, with a fresh draw of a random g every step (so
    the AE learns g's mean; a deterministic g is applied once to all images). Deterministic given `seed`, without
    touching the caller's random state."""
    with torch.random.fork_rng(devices=[images.device] if images.device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = DenseAutoEncoder(images.shape[1], layers, growth).to(images.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        fixed_targets = None if transform.random else transform(images)
        for _ in range(steps):
            batch = torch.randint(len(images), (min(batch_size, len(images)),), device=images.device)
            targets = transform(images[batch]) if fixed_targets is None else fixed_targets[batch]
            loss = F.mse_loss(model(images[batch]), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval().requires_grad_(False)


def approximation_fidelity(
    approximator: Callable[[Tensor], Tensor], transform: InputTransform, images: Tensor
) -> dict[str, float]:
    """Mean over the images of ‖AE(x) − g(x)‖₂ / ‖g(x)‖₂ and of SSIM(AE(x), g(x)), the paper's two figures (its
    Figure 4: 0.22 and 0.35 on one ImageNet image; 0.16 and 0.36 over 100). The L2 distance is relative to g(x),
    the image the approximation should reproduce, as threat's normalized_L2 is. A random g is drawn once per image."""
    with torch.no_grad():
        approximated, transformed = approximator(images), transform(images)
    ssim = structural_similarity_index_measure(approximated, transformed, data_range=1.0, reduction="none")
    return {
        "normalized_l2": distance(approximated, transformed, "normalized_L2").mean().item(),
        "ssim": ssim.mean().item(),
    }


def training_dataset_config(dataset_config: dict) -> dict:
    """The attacker fits g on the dataset's whole training split where its loader has one; otherwise on the images
    the config gives (g is public, so the attacker may apply it to any image, including those it attacks)."""
    parameters = inspect.signature(get_object(dataset_config["_target_"])).parameters
    if "split" not in parameters:
        return dataset_config
    whole_split = {"split": "train", "n_samples": None, "offset": 0}
    return {**dataset_config, **{name: value for name, value in whole_split.items() if name in parameters}}


def _full_recipe(transform_config: dict, dataset_config: dict, recipe: dict | None) -> dict:
    """Everything the trained weights depend on, as JSON would read it back (the cache key and the sidecar)."""
    full = {
        "transform": transform_config,
        "training_images": training_dataset_config(dataset_config),
        "approximator": dataclasses.asdict(ApproximatorRecipe(**(recipe or {}))),
        "code_version": TRAINING_CODE_VERSION,
    }
    return json.loads(json.dumps(full, sort_keys=True))


def approximator_path(
    transform_config: dict, dataset_config: dict, cache_dir: str | Path, recipe: dict | None = None
) -> Path:
    """Where the approximator of this g, dataset and recipe is cached (see `load_or_train_approximator`)."""
    return _cache_path(_full_recipe(transform_config, dataset_config, recipe), cache_dir)


def _cache_path(full_recipe: dict, cache_dir: str | Path) -> Path:
    return cache_path(cache_dir, "approximators", full_recipe)


def load_or_train_approximator(
    transform_config: dict, dataset_config: dict, cache_dir: str | Path, recipe: dict | None = None
) -> DenseAutoEncoder:
    """The cached approximator of the receiver_defense config `transform_config` for the dataset config
    `dataset_config` (both resolved Hydra configs), trained and cached first if there is no intact one.

    `recipe` overrides some or all of DEFAULT_RECIPE's settings. The cache key is the recipe, g's config and the
    training images' config (for a loader with a split: its whole train split, so every evaluation slice of a
    dataset shares one approximator).
    """
    full_recipe = _full_recipe(transform_config, dataset_config, recipe)
    path = _cache_path(full_recipe, cache_dir)
    layers, growth = full_recipe["approximator"]["layers"], full_recipe["approximator"]["growth"]
    cached = load_cached(path, full_recipe, lambda saved: DenseAutoEncoder(saved["channels"], layers, growth))
    if cached is not None:
        return cached
    training_config = full_recipe["training_images"]
    if "split" not in training_config:
        log.info("%s has no train split: fitting g on the images the config gives", training_config["_target_"])
    images = instantiate(training_config).images
    log.info("training the BPDA approximator of %s on %d images", transform_config["_target_"], len(images))
    model = train_approximator(instantiate(transform_config), images, **full_recipe["approximator"])
    save_with_checksum(model.state_dict(), path, {"recipe": full_recipe, "channels": images.shape[1]})
    log.info("cached the approximator at %s", path)
    return model
