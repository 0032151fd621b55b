"""The digits zoo: small classifiers the project trains itself on the digits train split, once, cached by recipe.

The cache file is keyed by a hash of the full training config, so changing any setting trains a new model
and a cached model is always the one its config describes. Training is deterministic given the seed. A JSON sidecar
beside each `.pt` records the recipe and the file's sha256: a cut-short or altered cache is retrained, not loaded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from preempt.attacks.pgd import PGD
from preempt.checkpoints import load_or_train, recipe_key
from preempt.datasets.digits import digits_split
from preempt.models.digits import ARCHITECTURES, DIGITS_MEAN, DIGITS_STD, NUM_CLASSES
from preempt.models.pixel_classifier import PixelClassifier
from preempt.parts.constraints import AtLeastOne, NonNegative, Positive
from preempt.parts.model import ModelSpec, declares_spec

log = logging.getLogger(__name__)

# Bump when the training code changes, so stale cached weights are not reused.
TRAINING_CODE_VERSION = 1


def _spec(image_size: int = 16, **settings) -> ModelSpec:
    return ModelSpec(input_shape=(1, image_size, image_size), num_classes=NUM_CLASSES)


@declares_spec(_spec)
def digits_model(
    architecture: Literal["cnn", "lenet", "mlp"],
    cache_dir: str,
    image_size: AtLeastOne = 16,
    epochs: AtLeastOne = 20,
    lr: Positive = 1e-3,
    batch_size: AtLeastOne = 64,
    seed: NonNegative = 0,
    adversarial_eps: Positive | None = None,
    adversarial_steps: AtLeastOne = 7,
) -> PixelClassifier:
    """A digits classifier; standard training, or PGD adversarial training when `adversarial_eps` is set."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown digits architecture {architecture!r}; choose from {sorted(ARCHITECTURES)}")
    if image_size % 4:
        raise ValueError(f"digits image_size={image_size} must be a multiple of 4")
    recipe = {
        "architecture": architecture,
        "image_size": image_size,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
        "adversarial_eps": adversarial_eps,
        "adversarial_steps": adversarial_steps,
        "code_version": TRAINING_CODE_VERSION,
    }
    kind = "at" if adversarial_eps else "std"
    name = f"digits_{architecture}_{kind}"
    path = Path(cache_dir) / f"{name}_{recipe_key(recipe)}.pt"

    def untrained(saved: dict | None = None) -> PixelClassifier:
        return PixelClassifier(
            ARCHITECTURES[architecture](image_size),
            name=name,
            input_shape=_spec(image_size).input_shape,
            mean=(DIGITS_MEAN,),
            std=(DIGITS_STD,),
            frozen=False,
        )

    def train() -> tuple[PixelClassifier, dict]:
        log.info("training %s (cached at %s)", name, path)
        model = untrained()
        _train(model, recipe)
        return model, {}

    return load_or_train(path, recipe, untrained, train).freeze()


def _train(model: PixelClassifier, recipe: dict) -> None:
    images, labels = digits_split("train", recipe["image_size"])
    generator = torch.Generator().manual_seed(recipe["seed"])
    with torch.random.fork_rng():
        torch.manual_seed(recipe["seed"])
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                module.reset_parameters()
        optimizer = torch.optim.Adam(model.parameters(), lr=recipe["lr"])
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe["epochs"])
        attack = None
        if recipe["adversarial_eps"]:
            attack = PGD(model, eps=recipe["adversarial_eps"], norm="Linf", steps=recipe["adversarial_steps"])
        for _ in range(recipe["epochs"]):
            for batch in torch.randperm(len(labels), generator=generator).split(recipe["batch_size"]):
                x, y = images[batch], labels[batch]
                if attack is not None:
                    model.eval()
                    x = attack(x, y)
                model.train()
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            schedule.step()
