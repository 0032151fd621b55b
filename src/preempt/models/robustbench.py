"""RobustBench models by name, loaded offline from `paths.model_dir` (downloaded when the network allows)."""

from __future__ import annotations

import contextlib
import difflib
import pickle
import sys
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch

from preempt.checkpoints import (
    CheckpointError,
    check_file,
    refuse_non_finite_model,
    tensors_only_loads,
    unpickling_error,
)
from preempt.models.pixel_classifier import PixelClassifier
from preempt.network import reachable, socket_timeout
from preempt.parts.model import ModelSpec, declares_spec

INPUT_SHAPES = {"cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "imagenet": (3, 224, 224)}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}


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


def _timm_url(name: str, dataset: str, threat_model: str) -> str | None:
    """The release URL of a model robustbench hosts as a timm checkpoint; None for the Google Drive ones."""
    import timm

    timm_name = _timm_name(name, dataset, threat_model)
    return timm.models.get_pretrained_cfg(timm_name).url if timm.is_model(timm_name) else None


def checkpoint_path(name: str, dataset: str, threat_model: str, model_dir: str | Path) -> Path:
    """Where the weights must be for an offline load: robustbench's own layout under `model_dir`."""
    url = _timm_url(name, dataset, threat_model)
    if url is not None:
        return Path(model_dir) / "hub" / "checkpoints" / Path(url).name
    return Path(model_dir) / dataset / threat_model / f"{name}.pt"


def _download_url(name: str, dataset: str, threat_model: str, gdrive_id: str | list[str] | None) -> str | None:
    """The URL robustbench would download the weights from (gdown's, for a Drive id), so it can be probed first."""
    url = _timm_url(name, dataset, threat_model)
    if url is None and gdrive_id:
        url = f"https://drive.google.com/uc?id={gdrive_id[0] if isinstance(gdrive_id, list) else gdrive_id}"
    return url


@contextlib.contextmanager
def _torch_hub_dir(path: Path) -> Iterator[None]:
    """Keep timm-hosted checkpoints under model_dir too, so one folder holds every weight file."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(path))
    try:
        yield
    finally:
        torch.hub.set_dir(previous)


def _spec(dataset: str, **settings) -> ModelSpec:
    return ModelSpec(input_shape=INPUT_SHAPES[dataset], num_classes=NUM_CLASSES[dataset])


@declares_spec(_spec)
def load_robustbench_model(
    name: str,
    dataset: Literal["cifar10", "cifar100", "imagenet"],
    threat_model: Literal["Linf", "L2", "corruptions"],
    model_dir: str,
) -> PixelClassifier:
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
    existed = path.exists()
    if existed:
        check_file(path)
    else:
        url = _download_url(name, dataset, threat_model, zoo[name]["gdrive_id"])
        if url is not None and not reachable(url):
            raise _not_found(name, dataset, threat_model, path, f"no answer from {url}")
    try:
        with _torch_hub_dir(Path(model_dir) / "hub"), tensors_only_loads(), socket_timeout():
            network = utils.load_model(name, model_dir=model_dir, dataset=dataset, threat_model=threat_model)
    except Exception as error:
        if not existed:
            _discard_failed_download(path, error)
        if isinstance(error, pickle.UnpicklingError):
            raise unpickling_error(path, error) from error
        if path.is_file() or not _is_download_failure(error):
            raise
        raise _not_found(name, dataset, threat_model, path, type(error).__name__) from None
    refuse_non_finite_model(network, path)
    return PixelClassifier(network, name=name, input_shape=INPUT_SHAPES[dataset])


def _not_found(name: str, dataset: str, threat_model: str, path: Path, reason: str) -> CheckpointNotFoundError:
    return CheckpointNotFoundError(
        f"weights of RobustBench model {name} ({dataset}/{threat_model}) are not on disk and could not be "
        f"downloaded ({reason}). Put the checkpoint at {path} (set paths.model_dir to change the folder) or run "
        f"once with network access."
    )


def _discard_failed_download(path: Path, error: Exception) -> None:
    """Delete an empty, partial or HTML file a failed download left at `path`, which the next run would load."""
    if not path.exists():
        return
    try:
        check_file(path)
    except CheckpointError as bad:
        path.unlink()
        raise CheckpointError(f"{bad} This run downloaded it and has deleted it.") from error


def _is_download_failure(error: BaseException) -> bool:
    import requests

    network_errors = (requests.exceptions.RequestException, urllib.error.URLError, ConnectionError, TimeoutError)
    while error is not None:
        if isinstance(error, network_errors):
            return True
        error = error.__cause__ or error.__context__
    return False
