"""Where and with what a number was computed: the device, the library versions, the checkout."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

import torch

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


def device_name(device: torch.device | None = None) -> str:
    """The GPU's name (the first visible one by default), or the CPU with the threads torch uses."""
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
