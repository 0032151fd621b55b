"""Any timm architecture with the user's own weights from a local file: ImageNet-style models of one's own, offline.

timm builds the network (never downloading: `pretrained=False`); the weights are a state dict read tensors-only,
bare or under a trainer's `state_dict` / `model` key, with DataParallel's `module.` prefixes stripped, and loaded
strictly. Input size, mean/std and class count default to timm's pretrained config for the architecture (a tag,
`resnet50.tv_in1k`, picks that recipe's), a record read without building the model, so the spec stays cheap.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import torch
from pydantic import AfterValidator

from preempt.checkpoints import CheckpointError, load_checkpoint
from preempt.models.pixel_classifier import PixelClassifier
from preempt.parts.constraints import AtLeastOne, Positive, WeightFile
from preempt.parts.model import ModelSpec, declares_spec

if TYPE_CHECKING:
    from timm.models import PretrainedCfg

# Where trainers put the state dict in a checkpoint that holds more (optimizer, epoch): timm's and Lightning's
# `state_dict`, torchvision's reference scripts' `model`.
STATE_DICT_KEYS = ("state_dict", "model")
DATA_PARALLEL_PREFIX = "module."
SHOWN_KEYS = 3  # how many missing or unexpected keys a refusal names
SHOWN_TOP_LEVEL_KEYS = 10  # how many of a checkpoint's own keys a refusal lists


def pretrained_config(architecture: str) -> PretrainedCfg:
    """timm's record of the architecture's preprocessing and head, read without building a model; an unknown
    name or tag is a ValueError naming close ones (timm's generic ImageNet record for the few without one)."""
    import timm
    from timm.models import PretrainedCfg, get_pretrained_cfg, split_model_name_tag

    name, tag = split_model_name_tag(architecture)
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "timm.list_models() lists them"
        raise ValueError(f"timm {timm.__version__} has no architecture {name!r}: {hint}")
    try:
        return get_pretrained_cfg(architecture) or PretrainedCfg()
    except RuntimeError:  # timm's refusal of an unknown tag
        tags = [found.partition(".")[2] for found in timm.list_pretrained(f"{name}.*")]
        raise ValueError(f"timm has no pretrained tag {tag!r} for {name}; its tags: {', '.join(tags)}") from None


def known_architecture(architecture: str) -> str:
    """An unknown name is refused at validation, with close ones, not when the model is built."""
    pretrained_config(architecture)
    return architecture


# A timm model name, optionally with a pretrained tag; an unknown one is refused at validation.
TimmArchitecture = Annotated[str, AfterValidator(known_architecture)]


def top_level_keys(loaded: dict) -> str:
    keys = list(loaded)
    return ", ".join(map(str, keys[:SHOWN_TOP_LEVEL_KEYS])) + (", ..." if len(keys) > SHOWN_TOP_LEVEL_KEYS else "")


def state_dict_in(loaded: object, path: Path, key: str | None) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint: under `key`, else the file itself when it holds only tensors,
    else under the first of STATE_DICT_KEYS it has; its DataParallel prefixes stripped."""
    if not isinstance(loaded, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(loaded).__name__}, not a state dict")
    if key is not None:
        if key not in loaded:
            raise CheckpointError(
                f"checkpoint {path} has no key {key!r} (state_dict_key); its keys: {top_level_keys(loaded)}"
            )
        state = loaded[key]
    elif all(isinstance(value, torch.Tensor) for value in loaded.values()):
        state = loaded
    else:
        found = [name for name in STATE_DICT_KEYS if isinstance(loaded.get(name), dict)]
        if not found:
            raise CheckpointError(
                f"checkpoint {path} is neither a bare state dict nor one under {' or '.join(STATE_DICT_KEYS)}; its "
                f"keys: {top_level_keys(loaded)}. Set state_dict_key to the key that holds the weights"
            )
        state = loaded[found[0]]
    if state and all(name.startswith(DATA_PARALLEL_PREFIX) for name in state):
        state = {name.removeprefix(DATA_PARALLEL_PREFIX): tensor for name, tensor in state.items()}
    return state


def load_strictly(network: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, built: str) -> None:
    """Every tensor of `network` from `state` and nothing else; a missing, unexpected or misshapen key is a
    CheckpointError naming the file, the first keys and the network `built` (checkpoints of another architecture
    or head size are the usual cause)."""
    expected = network.state_dict()
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    listed = [
        f"{len(names)} keys {what} (first: {', '.join(names[:SHOWN_KEYS])})"
        for what, names in (("missing", missing), ("unexpected", unexpected))
        if names
    ]
    if listed:
        raise CheckpointError(f"checkpoint {path} does not fit {built}: {'; '.join(listed)}")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"checkpoint {path} does not fit {built}: {name} has shape {tuple(tensor.shape)} where the network "
                f"needs {tuple(expected[name].shape)} (set num_classes to the checkpoint's class count?)"
            )
    network.load_state_dict(state)


def _spec(architecture: str, num_classes: int | None = None, input_size: int | None = None, **settings) -> ModelSpec:
    """From the settings, or else from timm's pretrained config: no model is built."""
    return spec_from(pretrained_config(architecture), num_classes, input_size)


def spec_from(pretrained: PretrainedCfg, num_classes: int | None, input_size: int | None) -> ModelSpec:
    channels, height, width = pretrained.input_size
    shape = (channels, input_size, input_size) if input_size is not None else (channels, height, width)
    return ModelSpec(input_shape=shape, num_classes=num_classes or pretrained.num_classes or 1000)


@declares_spec(_spec)
def load_timm_model(
    architecture: TimmArchitecture,
    checkpoint: WeightFile,
    num_classes: AtLeastOne | None = None,
    input_size: AtLeastOne | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[Positive, ...] | None = None,
    state_dict_key: str | None = None,
) -> PixelClassifier:
    """timm's `architecture` with the weights of `checkpoint`, on [0,1] pixels normalized by `mean`/`std`; what
    is not set comes from timm's pretrained config for the architecture (headless configs: 1000 classes)."""
    import timm

    pretrained = pretrained_config(architecture)
    spec = spec_from(pretrained, num_classes, input_size)
    network = timm.create_model(architecture, pretrained=False, num_classes=spec.num_classes)
    path = Path(checkpoint)
    state = state_dict_in(load_checkpoint(path), path, state_dict_key)
    load_strictly(network, state, path, f"timm's {architecture} with {spec.num_classes} classes")
    return PixelClassifier(
        network,
        name=architecture,
        input_shape=spec.input_shape,
        mean=pretrained.mean if mean is None else mean,
        std=pretrained.std if std is None else std,
    )
