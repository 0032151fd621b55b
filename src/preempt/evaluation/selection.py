"""Which images a run scores: all of them, or only those the bare victim classifies correctly.

The second paper reports accuracy and attack success on images its classifier gets right before any defense or
attack (`evaluate_on=victim_correct`); on all images, a success rate would count the victim's own mistakes as the
attack's.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from torch import nn

from preempt.datasets.base import ImageDataset

log = logging.getLogger(__name__)

EvaluateOn = Literal["all", "victim_correct"]


class NothingToScoreError(ValueError):
    """The selection left no image: the victim gets every image of the slice wrong."""


def victim_correct_mask(victim: nn.Module, dataset: ImageDataset, batch_size: int) -> torch.Tensor:
    """True where the bare victim's top class (no receiver-side defense, clean image) is the true label; on a GPU when
    one is visible, the victim returned to its device after."""
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    home = next(victim.parameters(), torch.empty(0)).device
    victim.to(device)
    try:
        with torch.inference_mode():
            predictions = [victim(images.to(device)).argmax(dim=1).cpu() for images in dataset.images.split(batch_size)]
    finally:
        victim.to(home)
    return torch.cat(predictions) == dataset.labels


def select_images(dataset: ImageDataset, evaluate_on: EvaluateOn, victim: nn.Module, batch_size: int) -> ImageDataset:
    """The images the run scores; with `victim_correct`, how many were kept is logged."""
    if evaluate_on == "all":
        return dataset
    keep = victim_correct_mask(victim, dataset, batch_size)
    if not keep.any():
        raise NothingToScoreError(
            f"evaluate_on=victim_correct: the victim classifies none of the {len(dataset)} images of {dataset.name} "
            f"correctly, so nothing is left to score; check the victim fits the dataset, or set evaluate_on=all"
        )
    log.info("evaluate_on=victim_correct: %d of %d images the victim classifies correctly", int(keep.sum()), len(keep))
    return dataset.subset(keep)
