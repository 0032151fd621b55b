"""Is every protected file within the budget of its original? (`preempt verify`, `preempt.commands.verify`)

It trusts nothing but the files: each output PNG and its original are read again (the original by the same
rules protect used, `preempt.protection.photos`), and their distance is measured in the budget's norm. The manifest only
says which original belongs to which output, in which budget, and with which file contents, so a file edited
or replaced after protection is named as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from preempt.protection.manifest import MANIFEST_FILE, read_manifest
from preempt.protection.photos import UnreadableImageError, decode_png, file_sha256, read_photo
from preempt.threat import LEVELS, distance

WITHIN, OVER, MISSING, NO_BUDGET = "within", "OVER", "missing", "no budget"


@dataclass
class Check:
    output: str
    verdict: str
    linf_levels: int | None = None
    distance: float | None = None  # in the budget's norm
    limit: float | None = None
    note: str = ""


def check_file(entry: dict, output_dir: Path, input_dir: Path) -> Check:
    output, original = output_dir / entry["output"], input_dir / entry["input"]
    for path, role in ((output, "output"), (original, "original")):
        if not path.is_file():
            return Check(entry["output"], MISSING, note=f"the {role} {path} is missing")
    try:
        before = read_photo(original, entry["channels"]).pixels
        after = decode_png(output.read_bytes(), entry["channels"])
    except (UnreadableImageError, OSError, ValueError) as error:
        return Check(entry["output"], MISSING, note=f"unreadable: {error}")
    notes = []
    if file_sha256(output) != entry["output_sha256"]:
        notes.append("output changed since protect wrote it")
    if file_sha256(original) != entry["input_sha256"]:
        notes.append("original changed since it was protected")
    if before.shape != after.shape:
        return Check(
            entry["output"], OVER, note="; ".join([f"size {tuple(after.shape)} ≠ {tuple(before.shape)}", *notes])
        )
    linf_levels = round(float((after - before).abs().max()) * LEVELS)
    budget = entry["settings"]["budget"]
    if budget is None:
        return Check(entry["output"], NO_BUDGET, linf_levels, note="; ".join(notes))
    eps, norm = budget["eps"], budget["norm"]
    if norm == "Linf":  # compared in whole levels: a bound of 8/255 allows exactly 8
        measured, limit = float(linf_levels), float(math.floor(eps * LEVELS + 1e-4))
    else:
        measured, limit = float(distance(after[None], before[None], norm)), eps  # normalized_L2 is relative
    verdict = WITHIN if measured <= limit * (1 + 1e-6) else OVER
    return Check(entry["output"], verdict, linf_levels, measured, limit, "; ".join(notes))


def verify(output_dir: Path, input_dir: Path | None = None) -> list[Check]:
    """One check per file the manifest records as protected; `input_dir` overrides where the originals are."""
    manifest = read_manifest(output_dir)
    if not manifest:
        raise FileNotFoundError(
            f"{output_dir / MANIFEST_FILE} is missing or empty: is {output_dir} a protect OUTPUT_DIR?"
        )
    return [
        check_file(entry, output_dir, input_dir if input_dir is not None else Path(entry["input_dir"]))
        for entry in manifest.values()
        if entry["status"] == "protected"
    ]
