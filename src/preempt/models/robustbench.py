"""RobustBench models by name, loaded offline from `paths.model_dir` (downloaded when the network allows)."""

from __future__ import annotations

import contextlib
import difflib
import pickle
import sys
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import torch

from preempt.models.pixel_classifier import PixelClassifier

INPUT_SHAPES = {"cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "imagenet": (3, 224, 224)}


class CheckpointNotFoundError(FileNotFoundError):
    """A model's weights are neither on disk nor downloadable."""


def _import_robustbench():
    """Import robustbench with the registry's AutoAttack package standing in for `autoattack`.

    robustbench does `from autoattack import AutoAttack` and `from autoattack.state import EvaluationState`,
    but the AutoAttack distribution on PyPI installs its modules as `pyautoattack`. This is the one place
    where the alias is registered, before robustbench's first import.
    """
    import pyautoattack
    import pyautoattack.state

    sys.modules.setdefault("autoattack", pyautoattack)
    sys.modules.setdefault("autoattack.state", pyautoattack.state)
    import robustbench.utils
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return robustbench.utils, model_dicts, BenchmarkDataset, ThreatModel


def _timm_name(name: str, dataset: str, threat_model: str) -> str:
    """The timm registry name robustbench uses for models it hosts as timm checkpoints."""
    return f"{name.lower().replace('-', '_')}_{dataset}_{threat_model.lower()}"


def checkpoint_path(name: str, dataset: str, threat_model: str, model_dir: str | Path) -> Path:
    """Where the weights must be for an offline load: robustbench's own layout under `model_dir`."""
    import timm

    timm_name = _timm_name(name, dataset, threat_model)
    if timm.is_model(timm_name):
        url = timm.models.get_pretrained_cfg(timm_name).url
        return Path(model_dir) / "hub" / "checkpoints" / Path(url).name
    return Path(model_dir) / dataset / threat_model / f"{name}.pt"


@contextlib.contextmanager
def _torch_hub_dir(path: Path) -> Iterator[None]:
    """Keep timm-hosted checkpoints under model_dir too, so one folder holds every weight file."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(path))
    try:
        yield
    finally:
        torch.hub.set_dir(previous)


def load_robustbench_model(name: str, dataset: str, threat_model: str, model_dir: str) -> PixelClassifier:
    """Load `name` from RobustBench's zoo; fail within seconds, naming the file, when it cannot be had."""
    utils, model_dicts, benchmark_dataset, threat = _import_robustbench()
    try:
        zoo = model_dicts[benchmark_dataset(dataset)][threat(threat_model)]
    except (ValueError, KeyError) as error:
        raise ValueError(
            f"RobustBench has no {dataset}/{threat_model} zoo: {error}. Datasets: cifar10, cifar100, "
            f"imagenet; threat models: Linf, L2, corruptions."
        ) from None
    if name not in zoo:
        close = difflib.get_close_matches(name, list(zoo), n=3)
        raise ValueError(f"unknown RobustBench model {name!r} for {dataset}/{threat_model}; close: {close}")

    path = checkpoint_path(name, dataset, threat_model, model_dir)
    try:
        with _torch_hub_dir(Path(model_dir) / "hub"):
            network = utils.load_model(name, model_dir=model_dir, dataset=dataset, threat_model=threat_model)
    except pickle.UnpicklingError as error:
        raise RuntimeError(
            f"torch refused to unpickle {path} with weights_only=True ({error}). If you trust the file, "
            f"run with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1."
        ) from error
    except Exception as error:
        if path.is_file() or not _is_download_failure(error):
            raise
        raise CheckpointNotFoundError(
            f"weights of RobustBench model {name} ({dataset}/{threat_model}) are not on disk and could not be "
            f"downloaded ({type(error).__name__}). Put the checkpoint at {path} (set paths.model_dir to "
            f"change the folder) or run once with network access."
        ) from None
    return PixelClassifier(network, name=name, input_shape=INPUT_SHAPES[dataset])


def _is_download_failure(error: BaseException) -> bool:
    import requests

    network_errors = (requests.exceptions.RequestException, urllib.error.URLError, ConnectionError, TimeoutError)
    while error is not None:
        if isinstance(error, network_errors):
            return True
        error = error.__cause__ or error.__context__
    return False
