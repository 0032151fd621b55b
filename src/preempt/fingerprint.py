"""Digests of settings that decide results, so finished work is found again by what it computed.

A digest covers a resolved config without the keys that only place files or size memory chunks: two configs that
differ only there compute the same numbers. A run's fingerprint also leaves out its paths, names and logging; a
protected file's settings digest (`preempt.protection`) and a cached protection's key (`preempt.evaluation`) are
made the same way.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Keys that place files or size memory chunks but do not change a single output pixel.
RESULT_NEUTRAL_KEYS = {"cache_dir", "model_dir", "data_dir", "copies_per_pass", "memory_budget_mb", "chunk_timings"}
# What names, places, logs or shows a run, or only sizes its memory: two configs that differ only here compute
# the same numbers, so they share one fingerprint.
NOT_IN_FINGERPRINT = {
    "paths",
    "task_name",
    "tags",
    "print_config",
    "skip_finished",
    "protection_cache",
    "logger",
    "num_workers",
}
NOT_IN_FINGERPRINT_OF = {"trainer": {"enable_progress_bar", "default_root_dir"}, "speed": {"keep_freed_memory"}}


def without_neutral_keys(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: without_neutral_keys(value) for key, value in node.items() if key not in RESULT_NEUTRAL_KEYS}
    if isinstance(node, list):
        return [without_neutral_keys(value) for value in node]
    return node


def digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def run_fingerprint(config: dict) -> str:
    """The digest of a resolved config without its output paths, names and logging (`NOT_IN_FINGERPRINT`) and
    without the keys that only place files or size memory chunks (`RESULT_NEUTRAL_KEYS`)."""
    kept = {key: value for key, value in config.items() if key not in NOT_IN_FINGERPRINT}
    for group, keys in NOT_IN_FINGERPRINT_OF.items():
        if isinstance(kept.get(group), dict):
            kept[group] = {key: value for key, value in kept[group].items() if key not in keys}
    return digest(without_neutral_keys(kept))
