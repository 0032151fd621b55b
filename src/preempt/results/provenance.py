"""Where and with what a number was computed: the library versions and the checkout (the device: `preempt.speed`)."""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path

# Libraries whose version can change a number in results.json.
RECORDED_PACKAGES = (
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "hydra-core",
    "pyautoattack",
    "robustbench",
    "foolbox",
    "scikit-learn",
    "numpy",
    "pillow",
)


def library_versions() -> dict[str, str | None]:
    versions = {}
    for package in RECORDED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def git_commit(root: Path) -> dict[str, str | bool | None]:
    """The checkout's commit and whether it had uncommitted changes; None outside a git checkout."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}
