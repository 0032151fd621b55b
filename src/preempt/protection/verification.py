"""Is every protected file within the budget of its original? (`preempt verify`, `preempt.commands.verify`)

It trusts nothing but the files: each output PNG and its original are read again (the original by the same
rules protect used, `preempt.protection.photos`), and their distance is measured in the budget's norm. The manifest
says which original belongs to which output, in which budget, and with which file contents; it is not signed, so
its own claims are checked too, and a receiver can give a budget of their own (`budget`, `--eps`/`--norm`).

Verdicts, worst first; only `within` and `no budget` pass:
- missing: the output or its original is gone or unreadable.
- EDITED: the line's settings do not hash to its settings_sha256, or its budget is not its defense's own eps and
  norm (a null budget beside a defense that has one is forged): the manifest was changed after protect wrote it.
- NOT PROTECTED: the output's pixels equal its original's (Linf 0 levels): it carries no protection.
- OVER: farther from its original than the budget allows, or of another size.
- within: inside the budget.
- no budget: the defense has no eps (JPEG, bit depth) and no budget was given: measured, not judged.
A file edited or replaced after protection, or an original changed since, is named in the note.

Torch-free (numpy and Pillow), so the command answers at once.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from preempt.fingerprint import digest
from preempt.protection.manifest_lines import MANIFEST_FILE, ManifestLine, defense_budget, read_lines
from preempt.protection.photos import LEVELS, UnreadableImageError, decode_levels, file_sha256, read_photo, sha256

WITHIN, OVER, MISSING, NO_BUDGET = "within", "OVER", "missing", "no budget"
NOT_PROTECTED, EDITED = "NOT PROTECTED", "EDITED"
VERDICTS = (WITHIN, OVER, MISSING, NO_BUDGET, NOT_PROTECTED, EDITED)  # in the order the sum lists them
PASSING = (WITHIN, NO_BUDGET)
NORMS = ("Linf", "L2", "normalized_L2", "RMS")  # `preempt.threat.NORMS`, measured here without torch


@dataclass
class Check:
    output: str
    verdict: str
    linf_levels: int | None = None
    distance: float | None = None  # in the budget's norm
    limit: float | None = None
    note: str = ""


def budget_problem(budget: Any) -> str | None:
    """Why `budget` is no {eps, norm} a protection can be measured in (as `preempt.threat.validate_budget` would
    refuse it); None when it is one."""
    if not isinstance(budget, dict) or set(budget) != {"eps", "norm"}:
        return f"{budget!r} is not an eps and a norm"
    eps, norm = budget["eps"], budget["norm"]
    if norm not in NORMS:
        return f"norm {norm!r} is none of {', '.join(NORMS)}"
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < math.inf:
        return f"eps {eps!r} is not a positive number"
    if norm != "L2" and eps > 1:
        return f"{norm} eps {eps:g} is more than pixels in [0,1] can differ: write 8/255 for 8 levels"
    return None


def distance(after: np.ndarray, before: np.ndarray, norm: str) -> float:
    """`preempt.threat.distance` of one image's (C, H, W) 8-bit levels from its original's, in [0,1] units."""
    difference = (after.astype(np.float64) - before) / LEVELS
    if norm == "Linf":
        return float(np.abs(difference).max())
    l2 = float(np.linalg.norm(difference))
    if norm == "normalized_L2":
        return l2 / max(float(np.linalg.norm(before / LEVELS)), 1e-12)
    return l2 / math.sqrt(difference.size) if norm == "RMS" else l2


def manifest_problem(line: ManifestLine) -> str | None:
    """How the line's settings differ from what protect wrote; None when nothing shows."""
    settings = line.entry["settings"]
    if digest(settings) != line.entry["settings_sha256"]:
        return f"line {line.number}: its settings do not hash to its settings_sha256 (changed after protect wrote them)"
    claimed, own = settings.get("budget"), defense_budget(settings.get("defense_settings"))
    if claimed != own:
        return (
            f"line {line.number}: budget {json.dumps(claimed)} is not its defense's own eps and norm, "
            f"{json.dumps(own)} (forged)"
        )
    problem = None if claimed is None else budget_problem(claimed)
    return None if problem is None else f"line {line.number}: budget {problem} (forged)"


def check_file(line: ManifestLine, output_dir: Path, input_dir: Path, budget: dict | None = None) -> Check:
    """One output against its original, in `budget` (default: the line's own, unless the line was edited)."""
    entry = line.entry
    name, output, original = entry["output"], output_dir / entry["output"], input_dir / entry["input"]
    for path, role in ((output, "output"), (original, "original")):
        if not path.is_file():
            return Check(name, MISSING, note=f"the {role} {path} is missing")
    try:
        data = output.read_bytes()
        after = decode_levels(data, entry["channels"], output.name)
        photo = read_photo(original, entry["channels"])
    except (UnreadableImageError, OSError) as error:
        return Check(name, MISSING, note=f"unreadable: {error}")
    edited = manifest_problem(line)
    notes = [edited] if edited else []
    if sha256(data) != entry["output_sha256"]:
        notes.append("output changed since protect wrote it")
    if file_sha256(original) != entry["input_sha256"]:
        notes.append("original changed since it was protected")
    before = photo.levels
    if before.shape != after.shape:
        notes.insert(0, f"size {after.shape} ≠ {before.shape}")
        return Check(name, EDITED if edited else OVER, note="; ".join(notes))
    linf_levels = int(np.abs(after.astype(np.int16) - before).max())
    if budget is None and not edited:
        budget = entry["settings"].get("budget")
    measured = limit = None
    if budget is not None:
        if budget["norm"] == "Linf":  # compared in whole levels: a bound of 8/255 allows exactly 8
            measured, limit = float(linf_levels), float(math.floor(budget["eps"] * LEVELS + 1e-4))
        else:
            measured, limit = distance(after, before, budget["norm"]), float(budget["eps"])  # normalized_L2: relative
    if edited:
        verdict = EDITED
    elif linf_levels == 0:
        verdict = NOT_PROTECTED
        notes.insert(0, "its pixels equal its original's")
    elif measured is None:
        verdict = NO_BUDGET
    else:
        verdict = WITHIN if measured <= limit * (1 + 1e-6) else OVER
    return Check(name, verdict, linf_levels, measured, limit, "; ".join(notes))


def verify(output_dir: Path, input_dir: Path | None = None, budget: dict | None = None) -> list[Check]:
    """One check per file the manifest records as protected; `input_dir` overrides where the originals are, and
    `budget` ({"eps", "norm"}) the manifest's budgets."""
    if budget is not None and (problem := budget_problem(budget)):
        raise ValueError(f"the budget {problem}")
    lines = read_lines(output_dir)
    if not lines:
        raise FileNotFoundError(
            f"{output_dir / MANIFEST_FILE} is missing or empty: is {output_dir} a protect OUTPUT_DIR?"
        )
    return [
        check_file(line, output_dir, input_dir if input_dir is not None else Path(line.entry["input_dir"]), budget)
        for line in lines.values()
        if line.entry["status"] == "protected"
    ]
