"""Preemptive Reversion (Fast Preemption paper, Algorithm 2): re-run the defense on the protected image and
reverse what the second run added, x̃ = x_r − (defend(x_r) − x_r).

Two runs of a preemptive defense in the same setting add mostly the same perturbation (the paper's Figure 5), so
subtracting the second run's perturbation removes most of the first's. That needs the sender's setup: with the
sender's backbone, settings and classifier it is the white-box attack; with the attacker's own backbone (or other
settings, or another classifier) it is the black-box one, where the features the second run learns differ.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from preempt.parts import Defense, LabelOnly, Reversion

Labeler = Callable[[Tensor, Tensor, Tensor], Tensor]
WHITE_BOX, BLACK_BOX = "white-box", "black-box"


def reverse_secondary_defense(protected: Tensor, defended_again: Tensor) -> Tensor:
    """Eq. 13, x̃ = x_r − ((x_r)_r − x_r), clipped to the [0,1] image box (the paper's equation may leave it)."""
    return (2 * protected - defended_again).clamp(0.0, 1.0)


def attacker_knowledge(backbone: object, classifier: object, defense_settings: Mapping | None) -> str:
    """White-box when the attacker re-runs exactly the sender's setup (nothing of its own), black-box otherwise."""
    return WHITE_BOX if backbone is None and classifier is None and not defense_settings else BLACK_BOX


class PreemptiveReversion(Reversion):
    """Algorithm 2 with what the attacker knows: each of `backbone`, `classifier` and `defense_settings` left
    unset is the sender's (all unset: white-box); a model set here, or any setting changed, makes it black-box.

    `backbone` and `classifier` are built from model configs (`model@reversion.backbone=<model>`);
    `defense_settings` are merged over the sender's defense config (the algorithm is public, its settings are not).
    The attacker's defense, bound to its backbone, and its labels for the protected images are given at test
    start (`secondary_defense`, `labeler`).
    """

    bound: ClassVar[tuple[str, ...]] = ("secondary_defense", "labeler")

    def __init__(
        self,
        backbone: nn.Module | None = None,
        classifier: nn.Module | LabelOnly | None = None,
        defense_settings: Mapping[str, Any] | None = None,
        secondary_defense: Defense | None = None,
        labeler: Labeler | None = None,
    ) -> None:
        self.backbone = backbone
        self.classifier = classifier
        self.defense_settings = dict(defense_settings or {})
        self.knowledge = attacker_knowledge(backbone, classifier, self.defense_settings)
        self.secondary_defense = secondary_defense
        self.labeler = labeler

    @classmethod
    def knowledge_of(cls, settings: Mapping[str, Any]) -> str:
        return attacker_knowledge(
            settings.get("backbone"), settings.get("classifier"), settings.get("defense_settings")
        )

    @classmethod
    def label(cls, settings: Mapping[str, Any]) -> str:
        return f"{cls.__name__} ({cls.knowledge_of(settings)})"

    def __call__(self, protected: Tensor, y: Tensor, index: Tensor) -> Tensor:
        if self.secondary_defense is None or self.labeler is None:
            raise RuntimeError("PreemptiveReversion runs once given its secondary_defense and labeler")
        labels = self.labeler(protected, y, index)
        with torch.enable_grad():
            defended_again = self.secondary_defense(protected, labels).detach()
        return reverse_secondary_defense(protected, defended_again)
