"""A5's robustifier R as the project trains it, once per backbone, training images, budget and recipe, cached.

A5 minimizes a certified (CROWN-IBP) bound from auto-LiRPA, and auto-LiRPA's only release on PyPI (0.3) requires
torch < 1.13 and fails to import with NumPy 2. The project's R minimizes the backbone's cross-entropy at PGD
adversarial examples of x_rob instead (first-order: the PGD perturbation is a constant), with A5's curriculum:
the attack's eps ramps up from 0 while the loss moves from clean to adversarial. The backbone stays frozen (A5's
"R" recipe; its "RC" recipe also retrains the classifier). `python -m preempt.commands.learn_robustifier` trains
it ahead and reports what it learned.
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
from torch import Tensor, nn

from preempt.attacks.pgd import PGD
from preempt.checkpoints import cache_path, load_or_train
from preempt.datasets.base import whole_training_split
from preempt.defenses.a5 import Robustifier, robustify
from preempt.parts.constraints import AtLeastOne, NonNegative, Positive, Seed

log = logging.getLogger(__name__)

# Bump when the architecture or the training code changes, so stale cached robustifiers are not reused.
TRAINING_CODE_VERSION = 1
# Config keys that say where files live, not what a model is: left out of the cache key.
LOCATION_KEYS = ("cache_dir", "data_dir", "model_dir")


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class RobustifierRecipe:
    """How the project trains R; the defaults are the one recipe a run and the command share."""

    epochs: AtLeastOne = 10
    batch_size: AtLeastOne = 64
    lr: Positive = 1e-3
    attack_steps: AtLeastOne = 7  # PGD steps of 2.5·eps/steps, one random start, against the frozen backbone
    warmup_epochs: NonNegative = 3  # the attack's eps ramps linearly from 0 to eps over these epochs
    seed: Seed = 0


@dataclass(frozen=True)
class RobustifierShape:
    """What A5's settings say about the R to train: its budget and architecture (`defense.eps`, `.width`, ...)."""

    eps: float
    width: int
    kernel_size: int


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


def full_recipe(
    shape: RobustifierShape, backbone_config: dict, dataset_config: dict, recipe: dict | None = None
) -> dict:
    """Everything the trained weights depend on, as JSON reads it back (the cache key and the sidecar)."""
    full = {
        "backbone": _without_locations(backbone_config),
        "training_images": _without_locations(whole_training_split(dataset_config)),
        "robustifier": dataclasses.asdict(shape),
        "training": dataclasses.asdict(RobustifierRecipe(**(recipe or {}))),
        "code_version": TRAINING_CODE_VERSION,
    }
    return json.loads(json.dumps(full, sort_keys=True))


def robustifier_path(full: dict, cache_dir: str | Path) -> Path:
    return cache_path(cache_dir, "robustifiers", full)


def load_or_train_robustifier(
    shape: RobustifierShape,
    backbone: nn.Module,
    backbone_config: dict,
    dataset_config: dict,
    cache_dir: str | Path,
    recipe: dict | None = None,
) -> Robustifier:
    """The cached R for this backbone, training images, eps and recipe, trained and cached first if there is no
    intact one. Training uses the dataset's whole train split where its loader has one."""
    full = full_recipe(shape, backbone_config, dataset_config, recipe)
    path = robustifier_path(full, cache_dir)

    def train() -> tuple[Robustifier, dict]:
        training = instantiate(whole_training_split(dataset_config))
        device = next(backbone.parameters()).device
        log.info("training the A5 robustifier on %d images against the backbone (cached at %s)", len(training), path)
        model = train_robustifier(
            backbone,
            training.images.to(device),
            training.labels.to(device),
            **dataclasses.asdict(shape),
            **full["training"],
        )
        return model, {"channels": training.images.shape[1]}

    def build(saved: dict) -> Robustifier:
        return Robustifier(saved["channels"], shape.width, shape.kernel_size)

    return load_or_train(path, full, build, train)
