"""The config folder, the resolvers its files use, and composing it outside `@hydra.main` as a command would."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from preempt.config import CONF_DIR, compose_run, composer, group_options, project_root, register_resolvers
from preempt.parts import ConfigError
from preempt.validation import option_name


def test_the_resolvers_write_budgets_and_slices_as_the_papers_do() -> None:
    register_resolvers()
    node = OmegaConf.create({"eps": "${div:8,255}", "offset": "${mul:3,100}", "root": "${project_root:}"})
    assert node.eps == pytest.approx(8 / 255) and node.offset == 300 and node.root == project_root()
    assert (Path(project_root()) / "conf") == CONF_DIR and CONF_DIR.is_dir()


def test_group_options_are_the_files_of_the_group() -> None:
    assert {"fast_preemption", "none", "a5"} <= set(group_options("defense"))
    assert group_options("defense") == sorted(path.stem for path in (CONF_DIR / "defense").glob("*.yaml"))


def test_a_composed_run_writes_where_it_is_told_and_names_what_the_user_picked(tmp_path: Path) -> None:
    with composer():
        cfg = compose_run("main", ["victim=digits_mlp"], tmp_path)
        assert cfg.paths.output_dir == str(tmp_path) and "hydra" not in cfg
        assert option_name(OmegaConf.to_container(cfg, resolve=True), "victim") == "digits_mlp"


def test_a_bad_override_is_a_config_error_naming_the_group(tmp_path: Path) -> None:
    with composer(), pytest.raises(ConfigError, match=r"Could not find 'defense/nope'.*see conf/main\.yaml"):
        compose_run("main", ["defense=nope"], tmp_path)
