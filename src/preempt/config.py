"""OmegaConf resolvers the configs use; registered once by every entry point before composing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from preempt.results import FinishedRunError, refuse_finished_output_dir


def project_root() -> str:
    """The repository root (the package is installed in editable mode from `src/`)."""
    return str(Path(__file__).resolve().parents[2])


def register_resolvers() -> None:
    """`${div:8,255}` writes eps as the papers do; `${project_root:}` anchors default paths."""
    if not OmegaConf.has_resolver("div"):
        OmegaConf.register_new_resolver("div", lambda a, b: float(a) / float(b))
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", project_root)


class KeepFinishedRuns(Callback):
    """Hydra writes `.hydra/` into the run folder before the job starts: refuse a finished one before that.

    Hydra turns exceptions raised in callbacks into warnings, so the refusal exits the process itself.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.refuse(Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.refuse(Path(config.hydra.sweep.dir))

    @staticmethod
    def refuse(folder: Path) -> None:
        try:
            refuse_finished_output_dir(folder)
        except FinishedRunError as error:
            raise SystemExit(f"error: {error}") from None
