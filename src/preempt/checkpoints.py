"""The one way the project reads weight files: tensors only, and a message naming the file and the fix on failure.

A bad checkpoint otherwise surfaces as `EOFError()`, a miniz error or an unpickling error that names no file, a
checkpoint holding pickled Python objects would run arbitrary code when loaded, and one holding NaN or inf weights
would run to the end with every output NaN (an accuracy of 0, an SSIM of nan) and no error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch

from preempt.files import exclusive_lock, replace_atomically, special_file_kind

log = logging.getLogger(__name__)

FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
FORCE_NO_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


class CheckpointError(RuntimeError):
    """A weight file is missing, unreadable or unsafe; a RuntimeError like torch's own load failures."""


def check_file(path: Path) -> None:
    """Catch, without reading tensor data, the files torch would fail on with a cryptic message (or never return
    from: a device such as /dev/zero, a FIFO)."""
    kind = special_file_kind(path)
    if kind is not None:
        raise CheckpointError(f"checkpoint {path} is {kind}, not a regular file. Point it at the weight file itself.")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist. Put the weight file there.")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"checkpoint {path} is empty (0 bytes): an interrupted download or write. Delete it and download or "
            f"copy the checkpoint again."
        )
    with path.open("rb") as file:
        head = file.read(512)
    if head.decode("utf-8", "ignore").lstrip("\ufeff \t\r\n").lower().startswith(("<!doctype html", "<html")):
        raise CheckpointError(
            f"checkpoint {path} is a web page, not weights: probably Google Drive's virus-scan or quota page saved "
            f"in place of the file. Download the checkpoint again by hand (in a browser) and place it at {path}."
        )
    if head.startswith(b"PK\x03\x04") and not zipfile.is_zipfile(path):
        raise _corrupt(path, "the zip archive has no central directory, so the file is cut short")


def load_checkpoint(path: str | Path) -> object:
    """`torch.load` on the CPU with `weights_only=True`, after `check_file`, and its tensors checked finite; every
    failure names `path`."""
    path = Path(path)
    check_file(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise unpickling_error(path, error) from error
    except Exception as error:
        raise _corrupt(path, f"torch could not read it: {type(error).__name__}: {_first_line(error)}") from error
    refuse_non_finite(_tensors_in(loaded), f"checkpoint {path}", _reexport(path))
    return loaded


def refuse_non_finite_model(model: torch.nn.Module, path: Path) -> None:
    """For loaders that read `path` their own way (TorchScript, RobustBench): the loaded model's parameters and
    buffers must be finite, as `load_checkpoint` requires of a file's tensors."""
    refuse_non_finite(_parameters_and_buffers(model), f"checkpoint {path}", _reexport(path))


def refuse_non_finite(named_tensors: Iterable[tuple[str, torch.Tensor]], source: str, fix: str) -> None:
    """A CheckpointError naming the first floating tensor with NaN or inf values and how many it holds."""
    for key, tensor in named_tensors:
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            count = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{source} holds non-finite weights: {key} has {count} NaN or inf values (of {tensor.numel()}), so "
                f"the model's outputs would be NaN. {fix}"
            )


def _reexport(path: Path) -> str:
    return f"Retrain the model, or export its weights again from a run whose weights are finite, and replace {path}."


def _tensors_in(loaded: object, key: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of a loaded checkpoint, in nested dicts, lists and tuples, under its path of keys."""
    if isinstance(loaded, torch.Tensor):
        yield key, loaded
    elif isinstance(loaded, dict):
        for name, value in loaded.items():
            yield from _tensors_in(value, f"{key}.{name}" if key else str(name))
    elif isinstance(loaded, list | tuple):
        for index, value in enumerate(loaded):
            yield from _tensors_in(value, f"{key}[{index}]")


def _parameters_and_buffers(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from model.named_parameters()
    yield from model.named_buffers()


def unpickling_error(path: Path, error: pickle.UnpicklingError) -> CheckpointError:
    """Explain torch's weights-only refusal of pickled code; other unpickling errors mean a damaged file."""
    found = re.search(r"GLOBAL (\S+)", str(error))
    if found is None:
        return _corrupt(path, f"torch could not unpickle it: {_first_line(error)}")
    converted = path.with_name(f"{path.stem}.tensors{path.suffix}")
    return CheckpointError(
        f"checkpoint {path} holds pickled Python objects (first: {found.group(1)}) that would run code when "
        f"loaded; the toolbox loads tensors only and refuses it. If you trust the file, convert it once, outside "
        f"the toolbox, to a plain state_dict: python -c \"import torch; torch.save(torch.load('{path}', "
        f"weights_only=False)['state_dict'], '{converted}')\" (use the key that holds the tensors, or "
        f".state_dict() for a pickled model), then move {converted} to {path}."
    )


@contextlib.contextmanager
def tensors_only_loads() -> Iterator[None]:
    """Make every `torch.load` inside the block weights-only, including third-party calls that pass
    `weights_only=False` (torch.hub) or none at all (robustbench)."""
    saved = {name: os.environ.get(name) for name in (FORCE_WEIGHTS_ONLY, FORCE_NO_WEIGHTS_ONLY)}
    os.environ[FORCE_WEIGHTS_ONLY] = "1"
    os.environ.pop(FORCE_NO_WEIGHTS_ONLY, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _corrupt(path: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} is truncated or corrupt ({what}), as after an interrupted download or write. Delete it "
        f"and download or copy the checkpoint again."
    )


def _first_line(error: BaseException) -> str:
    """The informative line of torch's message; weights-only errors put it after a paragraph of advice."""
    text = str(error).split("WeightsUnpickler error:")[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "no message"


def recipe_key(recipe: dict) -> str:
    """A short hash of everything a cached model depends on: its file name, so a changed setting trains anew."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def cache_path(cache_dir: str | Path, kind: str, recipe: dict) -> Path:
    """Where the project caches a model of `kind` trained by `recipe`: `<cache_dir>/<kind>/<recipe_key>.pt`."""
    return Path(cache_dir) / kind / f"{recipe_key(recipe)}.pt"


def load_cached(path: Path, recipe: dict, build: Callable[[dict], torch.nn.Module]) -> torch.nn.Module | None:
    """The cached model at `path`, frozen, if it is intact: `build(sidecar)` makes the empty model its state
    loads into. A missing, truncated or altered cache, or a state that does not fit, means retraining (None,
    with a warning), not an error."""
    if not path.exists():
        return None
    try:
        state, saved = load_with_checksum(path, recipe)
        model = build(saved)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, TypeError) as error:  # CheckpointError, or a sidecar or state that does not fit
        log.warning("cached model %s is unusable, retraining it: %s", path, error)
        return None
    return model.eval().requires_grad_(False)


def load_or_train(
    path: Path,
    recipe: dict,
    build: Callable[[dict], torch.nn.Module],
    train: Callable[[], tuple[torch.nn.Module, dict]],
) -> torch.nn.Module:
    """The cached model at `path` (see `load_cached`), or the one `train()` returns, saved there first with its
    recipe and the extra sidecar record `train` gives. One process trains: others that need the same model at the
    same time (a sweep's jobs, parallel tests) wait for it and load what it saved."""
    with exclusive_lock(path.with_suffix(".lock"), f"the training of {path.name}"):
        cached = load_cached(path, recipe, build)
        if cached is not None:
            return cached
        model, record = train()
        refuse_non_finite(
            _parameters_and_buffers(model),
            f"the model trained for {path}",
            "The training diverged and nothing was saved: change its recipe (a lower learning rate) and train again.",
        )
        save_with_checksum(model.state_dict(), path, {"recipe": recipe, **record})
        return model


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()  # cached models are a few MB at most


def save_with_checksum(state: dict, path: Path, record: dict) -> None:
    """A cache entry the project trained itself: weights first, then a JSON sidecar with `record` (its recipe and
    anything needed to rebuild the model) and the weights' sha256. A crash in between fails the later check."""
    replace_atomically(path, lambda tmp: torch.save(state, tmp))
    sidecar = json.dumps({**record, "sha256": _sha256(path)}, indent=2, sort_keys=True)
    replace_atomically(sidecar_path(path), lambda tmp: tmp.write_text(sidecar))


def load_with_checksum(path: Path, recipe: dict) -> tuple[dict, dict]:
    """The state dict and sidecar of a `save_with_checksum` entry; CheckpointError unless the sidecar records
    `recipe` and the file's current sha256 (a cut-short or altered cache is then retrained, not loaded)."""
    state = load_checkpoint(path)
    sidecar = sidecar_path(path)
    try:
        saved = json.loads(sidecar.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"its sidecar {sidecar} is missing or unreadable ({error})") from error
    if not isinstance(saved, dict) or saved.get("recipe") != recipe:
        raise CheckpointError(f"its sidecar {sidecar} does not record this training recipe")
    if saved.get("sha256") != _sha256(path):
        raise CheckpointError(f"its sha256 differs from the one in {sidecar}: the file is cut short or altered")
    return state, saved
