"""The project's config folder, the OmegaConf resolvers its files use, and composing it outside `@hydra.main`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict


def project_root() -> str:
    """The repository root (the package is installed in editable mode from `src/`)."""
    return str(Path(__file__).resolve().parents[2])


CONF_DIR = Path(project_root()) / "conf"


def register_resolvers() -> None:
    """`${div:8,255}` writes eps as the papers do; `${mul:${seed},100}` gives each seed its own data slice;
    `${project_root:}` anchors default paths."""
    if not OmegaConf.has_resolver("div"):
        OmegaConf.register_new_resolver("div", lambda a, b: float(a) / float(b))
    if not OmegaConf.has_resolver("mul"):
        OmegaConf.register_new_resolver("mul", lambda a, b: a * b)
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", project_root)


def group_options(group: str) -> list[str]:
    """The options of a config group: the files under conf/<group>/, so a new file is found without a list."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


@contextlib.contextmanager
def composer() -> Iterator[None]:
    """Hydra's compose API on conf/ (inside it, `compose_run` composes); Hydra's runtime config is cleared after."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            yield
        finally:
            HydraConfig.instance().cfg = None


def compose_run(config_name: str, overrides: list[str], output_dir: Path | str) -> DictConfig:
    """conf/<config_name>.yaml with the overrides, as `@hydra.main` would compose it (inside `composer()`): Hydra's
    runtime config is set, so `${hydra:...}` resolves and refusals name the option the user picked, and the run
    writes into `output_dir`. A Hydra error (an unknown group or option, a bad override) is a ConfigError."""
    try:
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    except HydraException as error:
        from preempt.parts import ConfigError  # imported here: the parts load torch, composing does not

        message = str(error).split("\nConfig search path")[0].replace("\n\t", " ").replace("\n\n", ". ")
        raise ConfigError(
            f"{message.strip()} (overrides are key=value or group=option; see conf/{config_name}.yaml)"
        ) from None
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.paths.output_dir = str(output_dir)
    return cfg
