"""A run's results.json: the run's facts, its metrics, the checks and curves it recorded, and its config."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from pathlib import Path

from hydra.utils import get_object

from preempt.fingerprint import run_fingerprint
from preempt.results.provenance import git_commit, library_versions
from preempt.reversions.protocol import reversion_knowledge, reversion_name, reversion_verdict
from preempt.speed import device_name

CHECK_PREFIX = "test/check_"


def part_name(node: dict) -> str:
    """The name a part's config gets in a table row and a legend (`Part.label`: BPDA+EOT for the adaptive attack,
    the attacks of an AutoAttack subset, marked when targeted); the class name for a target that gives none."""
    target = get_object(node["_target_"])
    settings = {key: value for key, value in node.items() if not key.startswith("_")}
    label = getattr(target, "label", None)
    return label(settings) if label is not None else node["_target_"].rsplit(".", 1)[-1]


def build_results(
    config: dict,
    metrics: dict[str, float],
    n_samples: int,
    wall_seconds: float,
    overrides: list[str] = (),
    warnings: list[str] = (),
    rounds: dict[str, list] | None = None,
    offered: int | None = None,
    steps: dict[str, list] | None = None,
) -> dict:
    """The run, its metrics and its config; AutoAttack's sanity checks as `sanity_checks` (flag -> fired), an
    iterative attack's per-round accuracy and success rate as `rounds`, a defense's per-learning-step accuracies
    (clean and attacked, Figure 8) as `steps`, and with a reversion stage the
    protocol's verdict as `reversion` (see `preempt.reversions.protocol`). `offered`: the slice's size when
    `evaluate_on` scored only `n_samples` of it."""
    checks = {key.removeprefix(CHECK_PREFIX): value > 0 for key, value in metrics.items() if CHECK_PREFIX in key}
    reversion = None
    if "test/reverted_clean_acc" in metrics:
        reversion = {
            "name": reversion_name(config["reversion"]),
            "knowledge": reversion_knowledge(config["reversion"]),
            **reversion_verdict(metrics, config["reversion_margin"]),
        }
    return {
        "run": {
            "overrides": list(overrides),
            "dataset": config["dataset"]["_target_"].rsplit(".", 1)[-1],
            "defense": config["defense"]["_target_"].rsplit(".", 1)[-1],
            "receiver_defense": config["receiver_defense"]["_target_"].rsplit(".", 1)[-1],
            "attack": part_name(config["attack"]),
            "reversion": reversion_name(config.get("reversion")),
            "oblivious": bool(config["threat"].get("oblivious", False)),
            "n_samples": n_samples,
            # The dataset slice's size, before `evaluate_on` kept the images scored (n_samples).
            "n_offered": n_samples if offered is None else offered,
            "seed": config.get("seed"),
            "fingerprint": run_fingerprint(config),
            "wall_seconds": round(wall_seconds, 2),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": device_name(),
            "python": platform.python_version(),
            "versions": library_versions(),
            "git": git_commit(Path(__file__).resolve().parent),
            "warnings": list(warnings),
        },
        "metrics": metrics,
        "sanity_checks": checks,
        "rounds": rounds,
        "steps": steps,
        "reversion": reversion,
        "config": config,
    }
