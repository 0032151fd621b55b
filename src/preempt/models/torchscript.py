"""A model saved as TorchScript (`torch.jit.save`): the user's own network, of any architecture, with no Python code
of theirs to import. The file holds the network's code for torch's own interpreter, not pickled Python."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from preempt.checkpoints import CheckpointError, check_file, refuse_non_finite_model
from preempt.models.pixel_classifier import PixelClassifier
from preempt.parts.constraints import AtLeastOne, Positive, WeightFile
from preempt.parts.model import ModelSpec, declares_spec


def load_script(path: Path) -> torch.jit.ScriptModule:
    """`torch.jit.load` on the CPU; a file it cannot read, or whose weights are not finite, is a CheckpointError
    naming it and how to make one."""
    check_file(path)
    try:
        with warnings.catch_warnings():  # torch deprecates TorchScript at every load; nothing the user can change
            warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", FutureWarning)
            script = torch.jit.load(path, map_location="cpu")
    except Exception as error:
        reason = str(error).split(". ")[0]
        raise CheckpointError(
            f"{path} is not a TorchScript file torch can load ({type(error).__name__}: {reason}). Save the model "
            f"in eval mode with torch.jit.save(torch.jit.script(model), path), or torch.jit.trace(model, images)"
        ) from error
    refuse_non_finite_model(script, path)
    return script


def _spec(input_shape: tuple[int, int, int] = (3, 224, 224), num_classes: int = 1000, **settings) -> ModelSpec:
    return ModelSpec(input_shape=tuple(input_shape), num_classes=num_classes)


@declares_spec(_spec)
def load_torchscript_model(
    file: WeightFile,
    input_shape: tuple[AtLeastOne, AtLeastOne, AtLeastOne] = (3, 224, 224),
    num_classes: AtLeastOne = 1000,
    mean: tuple[float, ...] | None = None,
    std: tuple[Positive, ...] | None = None,
) -> PixelClassifier:
    """The TorchScript network in `file` on [0,1] pixels of `input_shape` (C, H, W), normalized by `mean`/`std`;
    without them (null) the file's network takes the pixels as they are (it normalizes itself)."""
    if (mean is None) != (std is None):
        raise ValueError(f"{file}: mean and std normalize together: set both, or neither")
    path = Path(file)
    return PixelClassifier(load_script(path), name=path.name, input_shape=input_shape, mean=mean, std=std)
