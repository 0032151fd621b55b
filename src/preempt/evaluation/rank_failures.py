"""In a multi-process run, the process that fails first names the cause for all of them.

When one rank raises, the others fail next in a collective ("Connection closed by peer"), and that is
what the user would read last. The first failing rank records its error before Lightning tears down the
connections; the ranks that fail after it end with that recorded error instead of their own.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L

from preempt.files import replace_atomically


class RankFailedError(RuntimeError):
    """Another process of this run failed first; the message is its error."""


class RankFailureReport(L.Callback):
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.world_size > 1 and self.first_failure(other_than=trainer.global_rank) is None:
            message = f"rank {trainer.global_rank} failed: {type(exception).__name__}: {exception}"
            replace_atomically(self.path(trainer.global_rank), lambda tmp: tmp.write_text(message))

    def first_failure(self, other_than: int) -> str | None:
        """The recorded error of another rank, if one failed before this one."""
        if not self.folder.is_dir():
            return None
        recorded = sorted(path for path in self.folder.glob("rank_*.txt") if path != self.path(other_than))
        return recorded[0].read_text() if recorded else None

    def path(self, rank: int) -> Path:
        return self.folder / f"rank_{rank}.txt"
