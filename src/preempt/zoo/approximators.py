"""The BPDA approximator of a receiver-side transform g as the project trains it: a `DenseAutoEncoder` fitted to g.

It is trained once per (g, training images, recipe, training code) and cached under
`<cache_dir>/approximators/<hash>.pt`, as the digits zoo caches its models: the file name is a hash of the full
recipe, a JSON sidecar records the recipe and the file's sha256, and a cut-short or altered file is retrained.
`python -m preempt.commands.learn_approximator` trains it ahead and prints its fidelity.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass
from torch import Tensor

from preempt.attacks.approximator import DenseAutoEncoder
from preempt.checkpoints import cache_path, load_or_train
from preempt.datasets.base import whole_training_split
from preempt.parts import InputTransform
from preempt.parts.constraints import AtLeastOne, Positive, Seed

log = logging.getLogger(__name__)

# Bump when the architecture or the training code changes, so stale cached approximators are not reused.
TRAINING_CODE_VERSION = 1


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ApproximatorRecipe:
    """How an approximator is trained; the defaults are the one recipe a run and the command share."""

    layers: AtLeastOne = 6
    growth: AtLeastOne = 16
    steps: AtLeastOne = 600
    batch_size: AtLeastOne = 64
    lr: Positive = 3e-3
    seed: Seed = 0


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


def _full_recipe(transform_config: dict, dataset_config: dict, recipe: dict | None) -> dict:
    """Everything the trained weights depend on, as JSON would read it back (the cache key and the sidecar)."""
    full = {
        "transform": transform_config,
        "training_images": whole_training_split(dataset_config),
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

    def train() -> tuple[DenseAutoEncoder, dict]:
        training_config = full_recipe["training_images"]
        if "split" not in training_config:
            log.info("%s has no train split: fitting g on the images the config gives", training_config["_target_"])
        images = instantiate(training_config).images
        log.info("training the BPDA approximator of %s on %d images", transform_config["_target_"], len(images))
        model = train_approximator(instantiate(transform_config), images, **full_recipe["approximator"])
        log.info("caching the approximator at %s", path)
        return model, {"channels": images.shape[1]}

    return load_or_train(path, full_recipe, lambda saved: DenseAutoEncoder(saved["channels"], layers, growth), train)
