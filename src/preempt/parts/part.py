"""What every part shares: the models it is given at test start, the warnings it raises, its name in a table.

A part (a defense, an input transform, a reversion, an attack) is built from its config node by Hydra. The
models it works on are not config keys: it declares them in `bound` (constructor parameters), the validation
builds it once with those left None to refuse bad settings before any model exists, and the assembly
(`preempt.assembly.bind`) gives it exactly the models `models_to_bind` asks for, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import nn


class ConfigError(ValueError):
    """A composed config that cannot give a meaningful result; the message names the key and the fix."""


class Part:
    """The contract shared by every defense, transform, reversion and attack."""

    # Constructor parameters that are models (or parts) given at test start, never set from a config file.
    bound: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def models_to_bind(cls, settings: Mapping[str, Any]) -> tuple[str, ...]:
        """The bound parameters these settings leave for the assembly to give (a part whose settings can provide
        one itself, such as a checkpoint file, says so here)."""
        return tuple(name for name in cls.bound if settings.get(name) is None)

    @classmethod
    def label(cls, settings: Mapping[str, Any]) -> str:
        """The name a table row, a figure legend and results.json give a part of these settings."""
        return cls.__name__

    def warnings(self) -> list[str]:
        """Settings that run but probably do not mean what the user wants; shown and kept in results.json."""
        return []

    def check_fits(self, image_shape: tuple[int, ...]) -> None:
        """Refuse, once bound, images of shape (C, H, W) that this part cannot take (ValueError with the fix)."""


def held_models(part: object, prefix: str) -> dict[str, nn.Module]:
    """Every model a part holds, its parts' included (Bi-Level's inner attack, the reversion's secondary defense),
    named `<prefix>_<attribute>`: what a LightningModule must register so that the models move with it."""
    found: dict[str, nn.Module] = {}
    for name, value in vars(part).items():
        if isinstance(value, nn.Module):
            found[f"{prefix}_{name}"] = value
        elif isinstance(value, Part) and value is not part:
            found.update(held_models(value, f"{prefix}_{name}"))
    return found
