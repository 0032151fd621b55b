"""Protect's files made by hand, without torch or models: originals, outputs a chosen number of levels off them,
and the manifest lines protect writes about them, for the tests of what verify and the manifest reader refuse."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from preempt.fingerprint import digest
from preempt.protection.manifest_lines import MANIFEST_FILE
from preempt.protection.photos import file_sha256

BUDGET = {"eps": 8 / 255, "norm": "Linf"}
SETTINGS = {"defense": "fast_preemption", "defense_settings": {**BUDGET, "eta": 0.7}, "budget": BUDGET, "seed": 0}


def protected_folder(folder: Path, shifts: Sequence[int]) -> tuple[Path, Path]:
    """`folder/in`, an 8x8 gray original per shift, and `folder/out`, each output that many levels above its
    original (clipped to 255) with a line each, as protect writes them (budget Linf 8/255)."""
    source, target = folder / "in", folder / "out"
    source.mkdir(parents=True)
    target.mkdir()
    originals = np.random.default_rng(0).integers(20, 236, (len(shifts), 8, 8))
    for index, (original, shift) in enumerate(zip(originals, shifts, strict=True)):
        Image.fromarray(original.astype(np.uint8)).save(source / f"{index}.png")
        Image.fromarray(np.clip(original + shift, 0, 255).astype(np.uint8)).save(target / f"{index}.png")
    write_manifest(target, [manifest_line(f"{index}.png", source, target) for index in range(len(shifts))])
    return source, target


def manifest_line(name: str, source: Path, target: Path, settings: dict = SETTINGS) -> dict:
    return {"input": name, "output": name, "input_dir": str(source.resolve()), "channels": 1, "status": "protected",
            "input_sha256": file_sha256(source / name), "output_sha256": file_sha256(target / name),
            "settings": settings, "settings_sha256": digest(settings)}  # fmt: skip


def write_manifest(target: Path, entries: Sequence[dict]) -> None:
    (target / MANIFEST_FILE).write_text("".join(json.dumps(entry, sort_keys=True) + "\n" for entry in entries))
