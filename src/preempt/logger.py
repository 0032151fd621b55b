"""The W&B logger of the `logger` group, made quiet: one line with the offline run's folder instead of a banner."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import WandbLogger


class QuietWandbLogger(WandbLogger):
    """Lightning's WandbLogger with W&B's terminal output off (`silent`): W&B prints about ten lines per run.

    Lightning always passes `anonymous` to `wandb.init`, which current W&B warns about whatever its value, so it
    is dropped here. `run.finish_wandb_run` prints the one line a user needs: where the offline run is.
    """

    def __init__(self, **kwargs: Any) -> None:
        import wandb

        kwargs.setdefault("settings", wandb.Settings(silent=True))
        super().__init__(**kwargs)
        self._wandb_init.pop("anonymous", None)
