"""The record `preempt protect` keeps beside its outputs: one JSON line per file, and the settings behind it.

The manifest is append-only (a killed run loses at most its last, unfinished line, which readers skip); the
last line about an input wins. Each line carries the settings that decide the output and their digest, so a
rerun can tell finished work from work done with other settings, and anyone can audit how a file was made.
Any other line protect could not have written is refused (`manifest_lines`) before any work.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from preempt.fingerprint import without_neutral_keys
from preempt.parts import ConfigError
from preempt.protection.manifest_lines import MANIFEST_FILE, UnreadableManifestError, defense_budget, read_lines
from preempt.speed import ACCELERATIONS


class ManifestError(ConfigError, UnreadableManifestError):
    """A manifest protect could not have written, refused before any work with its file, line and fix."""


def protection_settings(config: dict, choices: dict[str, str], protect: dict) -> dict:
    """Everything that decides a protected file's pixels: the models, the defense, the budget, the size policy,
    the seed and, when the random starts are drawn per batch, how files are batched."""
    defense = config["defense"]
    batching = {"batch_size": config["batch_size"], "max_batch_megapixels": protect["max_batch_megapixels"]}
    return {
        "defense": choices.get("defense"),
        "defense_settings": without_neutral_keys(defense),
        "budget": defense_budget(defense),
        **{role: choices.get(role) for role in ("classifier", "backbone")},
        **{f"{role}_settings": without_neutral_keys(config[role]) for role in ("classifier", "backbone")},
        "resize": protect["resize"],
        "seed": config["seed"],
        "randomness": config["randomness"],
        # Per-batch draws depend on how files are batched; per-sample draws do not.
        **(batching if config["randomness"] == "per_batch" else {}),
        "speed": {key: config["speed"][key] for key in ACCELERATIONS},
    }


def flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from flatten(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), node


def differences(before: dict, now: dict) -> list[str]:
    """`key: old → new` for every setting that differs, for a refusal to show."""
    old, new = dict(flatten(before)), dict(flatten(now))
    return [
        f"{key}: {old.get(key)} → {new.get(key)}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]


def read_manifest(folder: Path) -> dict[str, dict]:
    """The last entry for each input (relative path); lines a killed run left unfinished are skipped, any other
    bad line refused (ManifestError)."""
    try:
        lines = read_lines(folder)
    except UnreadableManifestError as error:
        raise ManifestError(str(error)) from None
    return {name: line.entry for name, line in lines.items()}


class ManifestWriter:
    """Appends entries, each on disk (flushed and fsynced) before the output file it describes is renamed into
    place, so an output never exists without its line unless the user put it there."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / MANIFEST_FILE
        # O_NOFOLLOW: a link planted as the manifest would append these lines to its target (OSError instead).
        descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        size = os.fstat(descriptor).st_size
        unfinished = size and os.pread(descriptor, 1, size - 1) != b"\n"
        self.handle = os.fdopen(descriptor, "a", encoding="utf-8")
        if unfinished:  # a killed run's cut line: end it, so the next entry starts on its own line
            self.handle.write("\n")

    def append(self, entry: dict) -> None:
        self.handle.write(json.dumps(entry, sort_keys=True) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()
