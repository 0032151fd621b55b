"""Protect once, attack many: a batch's protected images kept on disk and reused by every run that would
compute exactly the same protection, whatever its attack, victim, receiver-side defense or reversion.

The key is everything that decides the protected pixels (defense, backbone, classifier, data, seed, randomness,
the speed options that change results, and with per-batch randomness the batch size), and within it each
batch by its first sample index and size. With the images, an entry keeps the random generators' states after
the protection, so a run that reuses it attacks from exactly the random starts a run that protected would.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import get_object
from torch import Tensor

from preempt import randomness
from preempt.files import replace_atomically
from preempt.fingerprint import digest, without_neutral_keys
from preempt.speed import ACCELERATIONS


def protection_fingerprint(config: dict) -> str:
    """What decides a batch's protection. The data slice is not in it (batches are keyed by their own indices)."""
    dataset = {key: value for key, value in config["dataset"].items() if key not in ("n_samples", "offset")}
    kept = {
        **{role: config[role] for role in ("defense", "backbone", "classifier", "seed", "randomness")},
        "dataset": dataset,
        "speed": {key: config["speed"][key] for key in ACCELERATIONS},
    }
    if config["randomness"] == "per_batch":
        kept["batch_size"] = config["batch_size"]
    if config["evaluate_on"] != "all":  # which images form each batch then depends on the victim too
        kept["evaluate_on"] = {config["evaluate_on"]: config["victim"]}
    return digest(without_neutral_keys(kept))


class ProtectionCache:
    """One file per batch under `folder/<fingerprint>/`, written atomically."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = Path(folder) / fingerprint

    def path(self, first_index: int, size: int) -> Path:
        return self.folder / f"{first_index}_{size}.pt"

    def load(self, first_index: int, size: int, labels: Tensor) -> tuple[Tensor, float] | None:
        """The cached protection and its seconds, with the generators set as after it; None on a miss (or a
        file for other labels, which a label-only classifier with other settings would give)."""
        path = self.path(first_index, size)
        if not path.is_file():
            return None
        entry = torch.load(path, map_location="cpu", weights_only=True)
        if not torch.equal(entry["labels"], labels.cpu()):
            return None
        torch.set_rng_state(entry["rng"])
        if torch.cuda.is_available() and entry.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(entry["cuda_rng"])
        randomness.restore_stream_states(entry.get("streams"))
        return entry["protected"].to(labels.device), float(entry["seconds"])

    def save(self, first_index: int, size: int, labels: Tensor, protected: Tensor, seconds: float) -> None:
        entry = {
            "labels": labels.cpu(),
            "protected": protected.detach().cpu(),
            "seconds": torch.tensor(seconds),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "streams": randomness.stream_states(),
        }
        replace_atomically(self.path(first_index, size), lambda tmp: torch.save(entry, tmp))


def protection_cache_for(config: dict) -> ProtectionCache | None:
    """The protected-image cache when `protection_cache=true` and the defense protects at all."""
    if not config["protection_cache"] or not get_object(config["defense"]["_target_"]).protects:
        return None
    return ProtectionCache(Path(config["paths"]["protected_dir"]), protection_fingerprint(config))
