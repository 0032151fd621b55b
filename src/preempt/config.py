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
    """`${div:8,255}` writes eps as the papers do; `${mul:${seed},100}` gives each seed its own data slice;
    `${project_root:}` anchors default paths."""
    if not OmegaConf.has_resolver("div"):
        OmegaConf.register_new_resolver("div", lambda a, b: float(a) / float(b))
    if not OmegaConf.has_resolver("mul"):
        OmegaConf.register_new_resolver("mul", lambda a, b: a * b)
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
