"""Sender-side defenses: `defense(backbone=...)(x, labels) -> protected x`, bound to models at test start."""

from preempt.defenses.base import Defense, NoDefense, bind_defense

__all__ = ["Defense", "NoDefense", "bind_defense"]
