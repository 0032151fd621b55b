"""Annotated types that make each `_target_`'s signature the schema of its config node.

The validation layer reads these annotations to check every key of a composed config before any model is
built, and `validate_call` on the defense and attack constructors applies the same rules to Python callers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from annotated_types import Ge, Gt, Le
from pydantic import AfterValidator, BeforeValidator, ConfigDict

FRACTION = re.compile(r"\s*(\d+(?:\.\d*)?)\s*/\s*(\d+(?:\.\d*)?)\s*")

# nn.Module and Tensor arguments are checked by isinstance, not by a schema.
ARBITRARY_TYPES = ConfigDict(arbitrary_types_allowed=True)


def read_fraction(value: object) -> object:
    """`threat.eps=8/255` arrives from Hydra's command line as the text "8/255": read it as the papers mean it."""
    if isinstance(value, str) and (match := FRACTION.fullmatch(value)):
        numerator, denominator = (float(part) for part in match.groups())
        if denominator == 0:
            raise ValueError(f"{value!r} divides by zero")
        return numerator / denominator
    return value


def existing_file(path: Path) -> Path:
    """A file the part would read only when built: refused at validation instead, before any work."""
    if path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "a device, pipe or socket"
        raise ValueError(f"{path.absolute()} is {kind}, not a regular file: point it at the weight file itself")
    if not path.is_file():
        raise ValueError(f"there is no file {path.absolute()}: put the weight file there")
    return path


# normalized_L2: ‖x′−x‖₂ / ‖x‖₂ ≤ eps per image (Guo et al.'s dissimilarity, the second paper's budget).
# RMS: ‖x′−x‖₂ / √(C·H·W) ≤ eps, the per-value root mean square (the second paper's authors' code bounds it by 0.05).
Norm = Literal["Linf", "L2", "normalized_L2", "RMS"]
# A budget in [0,1] pixel units; whether it fits the norm is checked by `threat.validate_budget`.
Eps = Annotated[float, BeforeValidator(read_fraction), Gt(0)]
AtLeastOne = Annotated[int, Ge(1)]
# Lightning's seed_everything (and numpy's seeding) take a 32-bit seed; a larger one would fail after models are built.
MAX_SEED = 2**32 - 1


def seed_in_range(value: int) -> int:
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"a seed is an integer from 0 to {MAX_SEED}")
    return value


Seed = Annotated[int, AfterValidator(seed_in_range)]
NonNegative = Annotated[int, Ge(0)]
Positive = Annotated[float, Gt(0)]
NonNegativeFloat = Annotated[float, Ge(0)]
# A step that moves at most the whole way to its target (Fast Preemption's eta; the paper uses 0.7).
StepFraction = Annotated[float, Gt(0), Le(1)]
# A file of the user's that a model reads (weights, a TorchScript model): a missing one is refused naming it.
WeightFile = Annotated[Path, AfterValidator(existing_file)]
