"""The record `preempt protect` keeps beside its outputs: one JSON line per file, and the settings behind it.

The manifest is append-only (a killed run loses at most its last, unfinished line, which readers skip); the
last line about an input wins. Each line carries the settings that decide the output and their digest, so a
rerun can tell finished work from work done with other settings, and anyone can audit how a file was made.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from preempt.fingerprint import without_neutral_keys
from preempt.speed import ACCELERATIONS

MANIFEST_FILE = "manifest.jsonl"


def protection_settings(config: dict, choices: dict[str, str], protect: dict) -> dict:
    """Everything that decides a protected file's pixels: the models, the defense, the budget, the size policy,
    the seed and, when the random starts are drawn per batch, how files are batched."""
    defense = config["defense"]
    batching = {"batch_size": config["batch_size"], "max_batch_megapixels": protect["max_batch_megapixels"]}
    budget = {"eps": defense["eps"], "norm": defense["norm"]} if "eps" in defense and "norm" in defense else None
    return {
        "defense": choices.get("defense"),
        "defense_settings": without_neutral_keys(defense),
        "budget": budget,
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
    """The last entry for each input (relative path); lines a killed run left unfinished are skipped."""
    path = folder / MANIFEST_FILE
    entries: dict[str, dict] = {}
    if not path.is_file():
        return entries
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and "input" in entry:
            entries[entry["input"]] = entry
    return entries


class ManifestWriter:
    """Appends entries, each on disk (flushed and fsynced) before the output file it describes is renamed into
    place, so an output never exists without its line unless the user put it there."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / MANIFEST_FILE
        unfinished = path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
        self.handle = path.open("a", encoding="utf-8")
        if unfinished:  # a killed run's cut line: end it, so the next entry starts on its own line
            self.handle.write("\n")

    def append(self, entry: dict) -> None:
        self.handle.write(json.dumps(entry, sort_keys=True) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()
