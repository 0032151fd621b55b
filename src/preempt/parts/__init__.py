"""The contracts every part shares, importing nothing else of the project: the bottom layer.

Libraries (datasets, models, defenses, receiver_defenses, attacks, reversions, ...) implement these; commands
(`preempt.commands`) run them. See docs/extending.md for adding a part.
"""

from preempt.parts.defense import Defense, NoDefense
from preempt.parts.model import LabelOnly, ModelSpec, assign_labels, declares_spec, spec_of
from preempt.parts.part import ConfigError, Part, held_models
from preempt.parts.reversion import NoReversion, Reversion, revert
from preempt.parts.transform import Identity, InputTransform, NonDifferentiableTransformError, bpda_hint

__all__ = [
    "ConfigError",
    "Defense",
    "Identity",
    "InputTransform",
    "LabelOnly",
    "ModelSpec",
    "NoDefense",
    "NoReversion",
    "NonDifferentiableTransformError",
    "Part",
    "Reversion",
    "assign_labels",
    "bpda_hint",
    "declares_spec",
    "held_models",
    "revert",
    "spec_of",
]
