"""What every command shares: `@hydra.main` on conf/ with the project's resolvers, a clean exit on SIGTERM,
refusals as one `error:` line, failed run folders marked, and the run's own overrides."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from preempt.config import CONF_DIR, register_resolvers
from preempt.evaluation.rank_failures import RankFailedError
from preempt.evaluation.sanity import NonFiniteImagesError
from preempt.files import FolderInUseError, exit_cleanly_on_sigterm, lock_folder
from preempt.parts import ConfigError
from preempt.results.store import FinishedRunError, mark_failed_run, refuse_finished_output_dir

log = logging.getLogger(__name__)

register_resolvers()


@contextlib.contextmanager
def one_line_refusals() -> Iterator[None]:
    """A refusal (bad config, finished run folder, a failed DDP rank, a loader naming a missing file) ends the
    command with one `error:` line; any other error keeps its traceback."""
    try:
        yield
    except InstantiationException as error:
        # Our loaders' errors name the file or key and the fix; Hydra's wrapper and traceback only hide that.
        if isinstance(error.__cause__, ValueError | OSError):
            raise SystemExit(f"error: {error.__cause__}") from None
        raise
    except (ConfigError, FinishedRunError, RankFailedError, NonFiniteImagesError) as error:
        raise SystemExit(f"error: {error}") from None


def launched_process() -> bool:
    """Whether this is a process Lightning started for DDP (local rank > 0, or another node), not the job's own."""
    return int(os.environ.get("LOCAL_RANK", 0)) > 0 or int(os.environ.get("NODE_RANK", 0)) > 0


@contextlib.contextmanager
def marked_if_failed(output_dir: Path) -> Iterator[None]:
    """A job that fails (refused, crashed, stopped by a signal) leaves its run folder marked `_failed`, with the
    reason in a FAILED file (`results.store.mark_failed_run`). Only the job's own process marks it: a DDP process
    renaming the folder under the others would take their failure reports away."""
    try:
        yield
    except BaseException as error:
        if not (isinstance(error, SystemExit) and error.code in (0, None)) and not launched_process():
            reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            marked = mark_failed_run(output_dir, reason)
            if marked is not None and marked != Path(output_dir):
                log.error("run folder marked failed: %s", marked)
        raise


def hydra_command(config_name: str, marks_failed_runs: bool = False) -> Callable[[Callable], Callable[[], None]]:
    """`@hydra.main` on conf/<config_name>.yaml around a command's `work(cfg)`, which then runs with a clean exit on
    SIGTERM and one-line refusals (and, with `marks_failed_runs`, its run folder marked if it fails)."""

    def decorate(work: Callable[[DictConfig], Any]) -> Callable[[], None]:
        @functools.wraps(work)
        def task(cfg: DictConfig) -> None:
            exit_cleanly_on_sigterm()
            folder = marked_if_failed(Path(cfg.paths.output_dir)) if marks_failed_runs else contextlib.nullcontext()
            with one_line_refusals(), folder:
                work(cfg)

        return hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(task)

    return decorate


def task_overrides() -> list[str]:
    """The command-line overrides of this run, recorded so tables can tell sweep jobs apart."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


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
        """A finished run folder, one another run is writing, or one that cannot be written is refused here; the
        run then holds the folder's lock until its process ends (DDP's other processes share their job's)."""
        try:
            refuse_finished_output_dir(folder)
            if not launched_process():
                lock_folder(folder, "src/main.py")
        except (FinishedRunError, FolderInUseError) as error:
            raise SystemExit(f"error: {error}") from None
        except OSError as error:
            raise SystemExit(
                f"error: the run folder {folder} cannot be written ({error.strerror}): set hydra.run.dir (or "
                f"hydra.sweep.dir) to a folder you can write"
            ) from None


def print_config_tree(cfg: DictConfig) -> None:
    """The composed config as a tree (the run's own settings, then one branch per part), so a run's log says
    what ran. Values are resolved where they can be; one that cannot (still ???) is shown as written, and
    validation then names it."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    def as_yaml(node: Any) -> str:
        try:
            return OmegaConf.to_yaml(node, resolve=True)
        except Exception:
            return OmegaConf.to_yaml(node)

    scalars = [key for key, value in cfg.items_ex(resolve=False) if not OmegaConf.is_config(value)]
    parts = [key for key, value in cfg.items_ex(resolve=False) if OmegaConf.is_config(value)]
    tree = Tree("config", guide_style="dim")
    branches = [("run", OmegaConf.masked_copy(cfg, scalars))] + [(key, cfg[key]) for key in parts]
    for name, node in branches:
        text = as_yaml(node).rstrip("\n")
        tree.add(str(name)).add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    Console(soft_wrap=True).print(tree)
