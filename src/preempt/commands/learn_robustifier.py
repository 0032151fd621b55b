"""Train and cache A5's robustifier R the project uses when `defense=a5` has no checkpoint.

`python -m preempt.commands.learn_robustifier dataset=digits backbone=digits_cnn_at`

Trains the recipe under `robustifier:` (conf/learn_robustifier.yaml, the recipe a run uses by default) against
the backbone on the dataset's training split, caches it under `paths.cache_dir`, and prints the backbone's
accuracy on the config's images (the held-out test split where the dataset has one) and on R's output, clean and
under the attack config: what R learned, white-box. How it transfers to a victim is a run of src/main.py.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from preempt.assembly import bind, settings_of, unwrapped
from preempt.commands.entry import hydra_command
from preempt.defenses.a5 import A5
from preempt.parts import ConfigError
from preempt.validation import read_section, validate_config
from preempt.zoo.robustifiers import (
    RobustifierRecipe,
    RobustifierShape,
    full_recipe,
    load_or_train_robustifier,
    robustifier_path,
)

log = logging.getLogger(__name__)


def learn_robustifier(cfg: DictConfig) -> dict[str, float]:
    with open_dict(cfg):
        recipe = dataclasses.asdict(
            read_section(RobustifierRecipe, OmegaConf.to_container(cfg.pop("robustifier"), resolve=True), "robustifier")
        )
    for warning in validate_config(cfg, scoring=False):
        log.warning(warning)
    config = OmegaConf.to_container(cfg, resolve=True)
    factory = instantiate(cfg.defense)
    settings = settings_of(factory)
    if unwrapped(factory)[0] is not A5 or settings["checkpoint"] is not None:
        raise ConfigError(
            "learn_robustifier trains the robustifier of defense=a5 with no defense.checkpoint; a checkpoint is "
            "already trained: drop defense.checkpoint"
        )
    backbone = instantiate(cfg.backbone)
    shape = RobustifierShape(settings["eps"], settings["width"], settings["kernel_size"])
    robustifier = load_or_train_robustifier(
        shape, backbone, config["backbone"], config["dataset"], cfg.paths.cache_dir, recipe
    )
    defense = bind(factory, {"robustifier": robustifier})
    dataset = instantiate(cfg.dataset)
    attack = bind(instantiate(cfg.attack), {"model": backbone})
    torch.manual_seed(cfg.seed)
    x, y = dataset.images, dataset.labels
    accuracy = {}
    for label, images in (("x", x), ("R's output", defense(x, y))):
        for kind, scored in (("clean", images), ("attacked", attack(images, y))):
            with torch.no_grad():
                accuracy[f"{label}, {kind}"] = (backbone(scored).argmax(1) == y).float().mean().item()
    path = robustifier_path(full_recipe(shape, config["backbone"], config["dataset"], recipe), cfg.paths.cache_dir)
    rows = "\n".join(f"{label:<24} {value:.3f}" for label, value in accuracy.items())
    print(f"\nbackbone accuracy on {len(dataset)} images of {dataset.name}:\n{rows}\n\nrobustifier: {path}")
    return accuracy


@hydra_command("learn_robustifier")
def main(cfg: DictConfig) -> None:
    learn_robustifier(cfg)


if __name__ == "__main__":
    main()
