"""Train and cache A5's robustifier R the project uses when `defense=a5` has no checkpoint.

`python -m preempt.defenses.learn_robustifier dataset=digits backbone=digits_cnn_at`

Trains the recipe under `robustifier:` (conf/learn_robustifier.yaml, the recipe a run uses by default) against
the backbone on the dataset's training split, caches it under `paths.cache_dir`, and prints the backbone's
accuracy on the config's images (the held-out test split where the dataset has one) and on R's output, clean and
under the attack config: what R learned, white-box. How it transfers to a victim is a run of src/main.py.
"""

from __future__ import annotations

import dataclasses
import logging

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from preempt.config import register_resolvers
from preempt.defenses.a5 import A5, RobustifierRecipe, full_recipe, load_or_train_robustifier, robustifier_path
from preempt.files import exit_cleanly_on_sigterm
from preempt.run import one_line_refusals
from preempt.validation import ConfigError, read_section, validate_config

log = logging.getLogger(__name__)


def learn_robustifier(cfg: DictConfig) -> dict[str, float]:
    with open_dict(cfg):
        recipe = dataclasses.asdict(
            read_section(RobustifierRecipe, OmegaConf.to_container(cfg.pop("robustifier"), resolve=True), "robustifier")
        )
    for warning in validate_config(cfg, scoring=False):
        log.warning(warning)
    config = OmegaConf.to_container(cfg, resolve=True)
    defense = instantiate(cfg.defense)()
    if not isinstance(defense, A5) or config["defense"].get("checkpoint") is not None:
        raise ConfigError(
            "learn_robustifier trains the robustifier of defense=a5 with no defense.checkpoint; a checkpoint is "
            "already trained: drop defense.checkpoint"
        )
    backbone = instantiate(cfg.backbone)
    robustifier = load_or_train_robustifier(
        defense, backbone, config["backbone"], config["dataset"], cfg.paths.cache_dir, recipe
    )
    defense.robustifier = robustifier
    dataset = instantiate(cfg.dataset)
    attack = instantiate(cfg.attack)(model=backbone)
    torch.manual_seed(cfg.seed)
    x, y = dataset.images, dataset.labels
    accuracy = {}
    for label, images in (("x", x), ("R's output", defense(x, y))):
        for kind, scored in (("clean", images), ("attacked", attack(images, y))):
            with torch.no_grad():
                accuracy[f"{label}, {kind}"] = (backbone(scored).argmax(1) == y).float().mean().item()
    path = robustifier_path(full_recipe(defense, config["backbone"], config["dataset"], recipe), cfg.paths.cache_dir)
    rows = "\n".join(f"{label:<24} {value:.3f}" for label, value in accuracy.items())
    print(f"\nbackbone accuracy on {len(dataset)} images of {dataset.name}:\n{rows}\n\nrobustifier: {path}")
    return accuracy


register_resolvers()


@hydra.main(version_base="1.3", config_path="../../../conf", config_name="learn_robustifier")
def main(cfg: DictConfig) -> None:
    exit_cleanly_on_sigterm()
    with one_line_refusals():
        learn_robustifier(cfg)


if __name__ == "__main__":
    main()
