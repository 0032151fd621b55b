"""Train and cache the digits score model DiffPure uses offline, and show what it purifies.

`python -m preempt.commands.learn_score_model`

Trains the score_model config's recipe on the digits training split (or loads it from `paths.cache_dir`), then
purifies the dataset's images with receiver_defense=diffpure at each `purify.t_stars`, prints the victim's accuracy
on them, and saves a picture: the originals in the top row, one row of purified images per t*.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

from preempt.assembly import Assembly, bind
from preempt.commands.entry import hydra_command
from preempt.files import replace_atomically
from preempt.parts import ConfigError
from preempt.parts.constraints import AtLeastOne
from preempt.receiver_defenses.diffpure import DiffPure, DiffusionTime
from preempt.receiver_defenses.jpeg import to_uint8_images
from preempt.validation import read_section, validate_config

log = logging.getLogger(__name__)


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class PurifySettings:
    t_stars: list[DiffusionTime]
    images: AtLeastOne
    scale: AtLeastOne
    picture: str


def purified_grid(rows: list[torch.Tensor], scale: int) -> Image.Image:
    """Rows of (N, C, H, W) images in [0,1] as one picture, each pixel drawn as a scale×scale block, the images
    one gray pixel apart."""
    padded = [torch.nn.functional.pad(row, (0, 1, 0, 1), value=0.5) for row in rows]
    grid = torch.cat([torch.cat(list(row), dim=-1) for row in padded], dim=-2)  # (C, rows·(H+1), N·(W+1))
    pixels = to_uint8_images(grid.expand(3, -1, -1)[None])[0]
    picture = Image.fromarray(pixels)
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def learn_score_model(cfg: DictConfig) -> dict[float, float]:
    with open_dict(cfg):
        settings = read_section(PurifySettings, OmegaConf.to_container(cfg.pop("purify"), resolve=True), "purify")
    for warning in validate_config(cfg, scoring=False):
        log.warning(warning)
    if not issubclass(get_object(cfg.receiver_defense._target_), DiffPure):
        raise ConfigError("learn_score_model draws DiffPure's purification: keep receiver_defense=diffpure")
    dataset = instantiate(cfg.dataset)
    assembly = Assembly(cfg)
    assembly.receiver_defense(dataset.image_shape)  # the score model, trained or loaded, and fit to the images
    victim = instantiate(cfg.victim)
    x, y = dataset.images, dataset.labels
    accuracy, rows = {}, [x[: settings.images]]
    with torch.no_grad():
        clean = (victim(x).argmax(1) == y).float().mean().item()
        for t_star in settings.t_stars:
            purify = bind(
                instantiate(cfg.receiver_defense, _partial_=True, t_star=t_star),
                {"score_model": assembly.score_model()},
            )
            torch.manual_seed(cfg.seed)
            purified = purify.transform(x)
            accuracy[t_star] = (victim(purified).argmax(1) == y).float().mean().item()
            rows.append(purified[: settings.images])
    path = Path(settings.picture)
    replace_atomically(path, lambda tmp: purified_grid(rows, settings.scale).save(tmp, format="PNG"))
    lines = "\n".join(f"t* = {t_star:<5} {value:.3f}" for t_star, value in accuracy.items())
    print(
        f"\nvictim accuracy on {len(dataset)} images of {dataset.name}: clean {clean:.3f}; purified:\n{lines}\n\n"
        f"picture: {path} (top row: the originals; then one row per t*)"
    )
    return accuracy


@hydra_command("learn_score_model")
def main(cfg: DictConfig) -> None:
    learn_score_model(cfg)


if __name__ == "__main__":
    main()
