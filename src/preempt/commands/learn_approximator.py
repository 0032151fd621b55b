"""Train and cache the BPDA approximation of a receiver-side transform g (the adaptive BPDA attack's backward pass).

`python -m preempt.commands.learn_approximator receiver_defense=dct_distortion dataset=digits`

Fits the recipe under `approximator:` (conf/learn_approximator.yaml, the same recipe a run uses by default) to g
on the dataset's training images and caches it under `paths.cache_dir`, where a run finds it; then prints how
close it gets to g on the config's images (the held-out test split where the dataset has one), beside the
identity, the naive BPDA approximation, and, for a random g, a second draw of g itself.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from preempt.attacks.approximator import approximation_fidelity
from preempt.commands.entry import hydra_command
from preempt.datasets.base import whole_training_split
from preempt.parts import ConfigError
from preempt.validation import option_name, read_section, validate_config
from preempt.zoo.approximators import ApproximatorRecipe, approximator_path, load_or_train_approximator

log = logging.getLogger(__name__)


def fidelity_table(fidelity: dict[str, dict[str, float]]) -> str:
    rows = [f"{'against g(x)':<24} {'normalized L2':>13} {'SSIM':>6}"]
    rows += [f"{label:<24} {row['normalized_l2']:>13.3f} {row['ssim']:>6.3f}" for label, row in fidelity.items()]
    return "\n".join(rows)


def learn_approximator(cfg: DictConfig) -> dict[str, dict[str, float]]:
    with open_dict(cfg):
        recipe = read_section(
            ApproximatorRecipe, OmegaConf.to_container(cfg.pop("approximator"), resolve=True), "approximator"
        )
    for warning in validate_config(cfg, scoring=False):
        log.warning(warning)
    config = OmegaConf.to_container(cfg, resolve=True)
    name = option_name(config, "receiver_defense")
    transform = instantiate(cfg.receiver_defense)
    if transform.differentiable:
        raise ConfigError(
            f"receiver_defense={name} is differentiable: attacks follow its own gradients, so it needs no BPDA "
            f"approximator. Pick a non-differentiable one, e.g. receiver_defense=dct_distortion"
        )
    settings = dataclasses.asdict(recipe)
    cache_dir = cfg.paths.cache_dir
    approximator = load_or_train_approximator(config["receiver_defense"], config["dataset"], cache_dir, settings)
    path = approximator_path(config["receiver_defense"], config["dataset"], cache_dir, settings)

    dataset = instantiate(cfg.dataset)
    held_out = whole_training_split(config["dataset"]).get("split") != config["dataset"].get("split")
    candidates = {"approximator": approximator, "identity (naive BPDA)": nn.Identity()}
    if transform.random:
        candidates["g itself, another draw"] = transform
    torch.manual_seed(cfg.seed)  # one reproducible draw of a random g per image and candidate
    fidelity = {label: approximation_fidelity(model, transform, dataset.images) for label, model in candidates.items()}
    images = f"{len(dataset)} {'held-out images' if held_out else 'images it was trained on'} of {dataset.name}"
    print(f"\nreceiver_defense={name}, on {images}:\n{fidelity_table(fidelity)}\n\napproximator: {path}")
    return fidelity


@hydra_command("learn_approximator")
def main(cfg: DictConfig) -> None:
    learn_approximator(cfg)


if __name__ == "__main__":
    main()
