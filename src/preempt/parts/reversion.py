"""The call shape every reversion attack shares.

A reversion gets the protected images the man in the middle intercepted, with the true labels and the samples'
indices (a white-box attacker labels them with the sender's classifier, which may need both), and returns its
guess of the original images, in [0,1]. Blind reversions (JPEG, DiffPure) are input transforms used as they
are: `revert` takes either.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from preempt.parts.part import Part
from preempt.parts.transform import InputTransform

# What a reversion's attacker knows of the sender's setup, as results.json records it.
NONE, BLIND = "none", "blind"


class Reversion(Part, ABC):
    """An attack that undoes a preemptive defense. `knowledge` says what it knows of the sender's setup."""

    knowledge: ClassVar[str] = BLIND

    @classmethod
    def knowledge_of(cls, settings: Mapping[str, Any]) -> str:
        """What a reversion of these settings knows (the class's `knowledge` unless its settings decide it)."""
        return cls.knowledge

    @abstractmethod
    def __call__(self, protected: Tensor, y: Tensor, index: Tensor) -> Tensor:
        """The guess of the original images, same shape and dtype as `protected`, in [0,1]."""


class NoReversion(Reversion):
    """The attack starts from the protected images as they arrive (no reversion stage)."""

    knowledge: ClassVar[str] = NONE

    @classmethod
    def label(cls, settings: Mapping[str, Any]) -> str:
        return "none"

    def __call__(self, protected: Tensor, y: Tensor, index: Tensor) -> Tensor:
        return protected


def revert(reversion: Reversion | InputTransform, protected: Tensor, y: Tensor, index: Tensor) -> Tensor:
    """Run a reversion attack or a blind one (an input transform such as JPEG or DiffPure) on protected images."""
    if isinstance(reversion, InputTransform):
        with torch.no_grad():
            return reversion.transform(protected.detach())
    return reversion(protected.detach(), y, index).detach()
