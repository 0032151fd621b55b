"""The W&B logger of the `logger` group, made quiet: one line with the offline run's folder instead of a banner."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger


class QuietWandbLogger(WandbLogger):
    """Lightning's WandbLogger with W&B's terminal output off (`silent`): W&B prints about ten lines per run.

    Lightning always passes `anonymous` to `wandb.init`, which current W&B warns about whatever its value, so it
    is dropped here. `finish_wandb_run` prints the one line a user needs: where the offline run is.
    """

    def __init__(self, **kwargs: Any) -> None:
        import wandb

        kwargs.setdefault("settings", wandb.Settings(silent=True))
        super().__init__(**kwargs)
        self._wandb_init.pop("anonymous", None)


def finish_wandb_run() -> None:
    """End this job's W&B run: it stays the process's current run otherwise, and in a multirun every later job's
    logger would attach to it (job 1 logging into job 0's run, with no run folder of its own)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        offline = wandb.run.settings.mode in ("offline", "dryrun")
        folder = Path(wandb.run.dir).parent
        wandb.finish()
        if offline:
            print(f"W&B run (offline): {folder}  (upload it with: wandb sync {folder})")
