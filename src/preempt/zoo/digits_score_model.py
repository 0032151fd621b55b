"""The digits score model DiffPure purifies with offline: the project's `DigitsUNet`, trained once on the digits
train split with the DDPM ε-prediction loss at continuous VP times with the schedule DiffPure solves (β from 0.1 to
20), and cached like the digits zoo, keyed by its recipe (`python -m preempt.commands.learn_score_model`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass
from torch import Tensor, nn

from preempt.checkpoints import cache_path, load_or_train
from preempt.datasets.digits import digits_split
from preempt.parts.constraints import AtLeastOne, NonNegative, Positive
from preempt.score_models.digits import DigitsUNet
from preempt.score_models.vp import continuous_alpha_bar

log = logging.getLogger(__name__)

# Bump when the architecture or the training code changes, so stale cached score models are not reused.
TRAINING_CODE_VERSION = 1
# The smallest training time: at t → 0 the noise is invisible and ε̂ is ill-posed (DiffPure stops at 1e-5).
MIN_TIME = 1e-3


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ScoreModelRecipe:
    """How the project trains its digits score model; the defaults are the one recipe a run and the command share."""

    image_size: AtLeastOne = 16  # the digits dataset's image_size the model is trained at (and purifies at)
    width: AtLeastOne = 16
    steps: AtLeastOne = 4000  # Adam steps on batches drawn from the 1,437 training digits
    batch_size: AtLeastOne = 128
    lr: Positive = 2e-3
    ema_decay: Positive = 0.999  # the cached weights are this exponential moving average of the trained ones
    seed: NonNegative = 0


def denoising_loss(model: nn.Module, x0: Tensor) -> Tensor:
    """DDPM's ε-prediction loss at t ~ U(MIN_TIME, 1), x_t = √ᾱ(t)·x0 + √(1−ᾱ(t))·ε with DiffPure's ᾱ(t)."""
    t = MIN_TIME + (1 - MIN_TIME) * torch.rand(len(x0), device=x0.device)
    alpha_bar = continuous_alpha_bar(t)[:, None, None, None]
    noise = torch.randn_like(x0)
    noisy = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
    return F.mse_loss(model(noisy, t), noise)


def train_digits_score_model(images: Tensor, recipe: ScoreModelRecipe) -> DigitsUNet:
    """Adam with a cosine-decayed learning rate on `images` in [0,1] (centered to [-1,1] here); returns the EMA
    weights. Deterministic given the recipe's seed, without touching the caller's random state."""
    with torch.random.fork_rng(devices=[images.device] if images.device.type == "cuda" else []):
        torch.manual_seed(recipe.seed)
        model = DigitsUNet(images.shape[1], recipe.image_size, recipe.width).to(images.device)
        average = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(recipe.ema_decay)
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.steps)
        centered = 2 * images - 1
        for _ in range(recipe.steps):
            batch = centered[torch.randint(len(centered), (recipe.batch_size,), device=images.device)]
            loss = denoising_loss(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            average.update_parameters(model)
    return average.module.eval().requires_grad_(False)


def full_recipe(recipe: ScoreModelRecipe) -> dict:
    """Everything the trained weights depend on, as JSON reads it back (the cache key and the sidecar)."""
    full = {"training": dataclasses.asdict(recipe), "data": "digits train split", "code_version": TRAINING_CODE_VERSION}
    return json.loads(json.dumps(full, sort_keys=True))


def score_model_path(recipe: ScoreModelRecipe, cache_dir: str | Path) -> Path:
    return cache_path(cache_dir, "score_models", full_recipe(recipe))


DEFAULT_RECIPE = ScoreModelRecipe()


def load_or_train_digits_score_model(
    cache_dir: str,
    image_size: AtLeastOne = DEFAULT_RECIPE.image_size,
    width: AtLeastOne = DEFAULT_RECIPE.width,
    steps: AtLeastOne = DEFAULT_RECIPE.steps,
    batch_size: AtLeastOne = DEFAULT_RECIPE.batch_size,
    lr: Positive = DEFAULT_RECIPE.lr,
    ema_decay: Positive = DEFAULT_RECIPE.ema_decay,
    seed: NonNegative = DEFAULT_RECIPE.seed,
) -> DigitsUNet:
    """The cached digits score model of this recipe, trained on the digits training split and cached first if
    there is no intact one (13 minutes on two CPU cores)."""
    recipe = ScoreModelRecipe(image_size, width, steps, batch_size, lr, ema_decay, seed)
    full = full_recipe(recipe)
    path = score_model_path(recipe, cache_dir)

    def train() -> tuple[DigitsUNet, dict]:
        images, _ = digits_split("train", image_size)
        log.info("training the digits score model on %d images, %d steps (cached at %s)", len(images), steps, path)
        return train_digits_score_model(images, recipe), {}

    return load_or_train(path, full, lambda saved: DigitsUNet(1, recipe.image_size, recipe.width), train)
