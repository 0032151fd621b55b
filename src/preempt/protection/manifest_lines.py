"""`manifest.jsonl` read back line by line, and every line `preempt protect` could not have written refused.

A line must be a JSON object with the keys and types protect writes, a status of `protected` or `failed`, 1 or 3
channels, and input and output paths that stay inside their folders. A killed run's cut line is skipped: it stops
before its closing brace (the run that resumes ends it with a newline, `manifest.ManifestWriter`), or it is the
last line and has no newline. Any other bad line is refused with the file, the line number and the fix.

Torch-free, so `preempt verify` answers at once; protect reads through `manifest.read_manifest`, whose refusal is
a ConfigError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST_FILE = "manifest.jsonl"
STATUSES = ("protected", "failed")
CHANNELS = (1, 3)
# The keys every line has and their JSON types, then those of each status.
REQUIRED = {"input": str, "output": str, "input_dir": str, "input_sha256": str, "status": str, "channels": int,
            "settings": dict, "settings_sha256": str}  # fmt: skip
REQUIRED_BY_STATUS = {"protected": {"output_sha256": str}, "failed": {"error": str}}
JSON_KINDS = {str: "a string", int: "a whole number", float: "a number", bool: "true/false", dict: "an object",
              list: "a list", type(None): "null"}  # fmt: skip
FIX = "preempt protect writes every line itself: restore the line, or delete it and protect that file again (--force)"


class UnreadableManifestError(ValueError):
    """A manifest, or a line of it, that protect could not have written; the message names the file, line and fix."""


@dataclass(frozen=True)
class ManifestLine:
    number: int  # from 1, as an editor counts
    entry: dict


def defense_budget(defense_settings: Any) -> dict | None:
    """The budget a defense's settings carry: its eps and norm, or None for a defense without them (JPEG)."""
    if isinstance(defense_settings, dict) and "eps" in defense_settings and "norm" in defense_settings:
        return {"eps": defense_settings["eps"], "norm": defense_settings["norm"]}
    return None


def read_lines(folder: Path) -> dict[str, ManifestLine]:
    """The last line about each input (its path under INPUT_DIR); none when `folder` has no manifest."""
    path = folder / MANIFEST_FILE
    if not path.exists():
        return {}
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise UnreadableManifestError(
            f"{path} is {kind}, not the manifest preempt protect writes: move it out of {folder}"
        )
    *ended, last = path.read_bytes().split(b"\n")
    lines: dict[str, ManifestLine] = {}
    for number, raw in enumerate([*ended, last], start=1):
        entry = parse_line(raw.strip(), path, number, ended=number <= len(ended))
        if entry is not None:
            lines[entry["input"]] = ManifestLine(number, entry)
    return lines


def parse_line(text: bytes, path: Path, number: int, ended: bool) -> dict | None:
    """The checked entry of a line; None for a blank line or a killed run's cut one."""
    if not text:
        return None
    try:
        line = text.decode("utf-8")
    except UnicodeDecodeError as error:
        if not ended:
            return None
        raise refusal(path, number, f"byte {text[error.start]:#04x} at byte {error.start + 1} is not UTF-8") from None
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as error:
        cut = line.startswith("{") and (not line.endswith("}") or error.pos >= len(line))
        if cut or not ended:
            return None
        raise refusal(path, number, f"it is not JSON ({error.msg} at column {error.colno})") from None
    problem = entry_problem(entry)
    if problem:
        raise refusal(path, number, problem)
    return entry


def entry_problem(entry: Any) -> str | None:
    """What makes `entry` no line protect writes; None when it is one."""
    if not isinstance(entry, dict):
        return f"it is {json_kind(entry)}, not a JSON object"
    problem = keys_problem(entry, REQUIRED)
    if problem:
        return problem
    if entry["status"] not in STATUSES:
        return f"status {entry['status']!r} is neither of {', '.join(STATUSES)}"
    problem = keys_problem(entry, REQUIRED_BY_STATUS[entry["status"]])
    if problem:
        return problem
    if entry["channels"] not in CHANNELS:
        return f"channels is {entry['channels']}, not 1 (gray) or 3 (RGB)"
    for key, folder in (("input", "INPUT_DIR"), ("output", "OUTPUT_DIR")):
        path = PurePosixPath(entry[key])
        if "\0" in entry[key] or not path.parts:
            return f"{key} {entry[key]!r} names no file"
        if path.is_absolute() or ".." in path.parts:
            how = "is absolute" if path.is_absolute() else "climbs out with .."
            return f"{key} {entry[key]!r} {how}: it must be a relative path inside {folder}"
    return None


def keys_problem(entry: dict, expected: dict[str, type]) -> str | None:
    missing = [key for key in expected if key not in entry]
    if missing:
        return f"it has no {', '.join(missing)}"
    for key, kind in expected.items():
        if type(entry[key]) is not kind:  # `type`, not isinstance: true/false is no channel count
            return f"{key} is {json_kind(entry[key])}, not {JSON_KINDS[kind]}"
    return None


def json_kind(value: Any) -> str:
    return JSON_KINDS.get(type(value), type(value).__name__)


def refusal(path: Path, number: int, problem: str) -> UnreadableManifestError:
    return UnreadableManifestError(f"{path}, line {number}: {problem}; {FIX}")
