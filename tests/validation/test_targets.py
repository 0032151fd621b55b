"""A config builds only trusted `_target_`s: the project's parts, Lightning's trainer, loggers and callbacks, and the
modules the user names in PREEMPT_TRUSTED_MODULES; anything else is refused, naming the key, before it is imported."""

import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONF_DIR

from preempt.parts import ConfigError
from preempt.validation import validate_config
from preempt.validation.targets import (
    TRUSTED_MODULES_VARIABLE,
    check_trusted_targets,
    is_trusted,
    locate_trusted,
    targets_in,
    trusted_prefixes,
)


def test_a_function_outside_the_project_is_refused_naming_the_key_and_the_fix(compose_config, tmp_path) -> None:
    copied = tmp_path / "copied"
    copy = (
        "defense=none",
        "defense._target_=shutil.copy",
        f"+defense.src={CONF_DIR / 'main.yaml'}",
        f"+defense.dst={copied}",
    )
    cfg = compose_config(*copy)
    with pytest.raises(ConfigError, match=r"defense\._target_=shutil\.copy: shutil is not a trusted module") as error:
        validate_config(cfg)
    assert TRUSTED_MODULES_VARIABLE in str(error.value) and "project's options" in str(error.value)
    assert not copied.exists()  # without the check, validation would build (call) it


def test_a_main_config_naming_an_outside_classifier_is_refused(compose_config) -> None:
    with pytest.raises(ConfigError, match=r"classifier\._target_=shutil\.copy"):
        validate_config(compose_config("classifier._target_=shutil.copy"))


def test_an_untrusted_module_is_refused_before_it_is_imported(tmp_path: Path, monkeypatch) -> None:
    """Importing a module runs its code: the name alone decides."""
    marker = tmp_path / "imported"
    (tmp_path / "loud_models.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef build(): pass\n")
    monkeypatch.syspath_prepend(tmp_path)
    with pytest.raises(ConfigError, match=r"victim\._target_=loud_models\.build"):
        check_trusted_targets({"victim": {"_target_": "loud_models.build"}})
    assert not marker.exists() and "loud_models" not in sys.modules


def test_a_module_named_in_the_environment_is_trusted(compose_config, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "lab_models.py").write_text(
        "from torch import nn\n\ndef classifier(**settings):\n    return nn.Identity()\n"
    )
    monkeypatch.syspath_prepend(tmp_path)
    cfg = compose_config("classifier._target_=lab_models.classifier")
    with pytest.raises(ConfigError, match="lab_models is not a trusted module"):
        validate_config(cfg)
    monkeypatch.setenv(TRUSTED_MODULES_VARIABLE, "other_lab, lab_models")
    validate_config(cfg)


def test_prefixes_match_whole_dotted_names(monkeypatch) -> None:
    monkeypatch.setenv(TRUSTED_MODULES_VARIABLE, "lab")
    prefixes = trusted_prefixes()
    assert is_trusted("preempt.defenses.a5.A5", prefixes) and is_trusted("lab.nets.Net", prefixes)
    assert is_trusted("lightning.Trainer", prefixes) and is_trusted("lightning.pytorch.loggers.CSVLogger", prefixes)
    assert is_trusted("lightning.pytorch.strategies.DDPStrategy", prefixes)
    assert is_trusted("lightning.fabric.plugins.environments.LightningEnvironment", prefixes)
    for lookalike in ("preempt_evil.x", "preemptx.y", "lightning.TrainerFactory", "laboratory.x", "lightning.fabric.x"):
        assert not is_trusted(lookalike, prefixes), lookalike


def test_a_trusted_name_that_reaches_another_modules_function_is_refused() -> None:
    """`preempt.results.store` imports shutil, so this name is shutil's copy."""
    with pytest.raises(ConfigError, match=r"it is shutil\.copy, defined outside the trusted modules"):
        locate_trusted("defense._target_", "preempt.results.store.shutil.copy")


def test_targets_are_found_at_any_depth_lists_too() -> None:
    config = {"trainer": {"_target_": "lightning.Trainer", "callbacks": [{"x": 1}, {"_target_": "shutil.copy"}]}}
    assert list(targets_in(config)) == [
        ("trainer._target_", "lightning.Trainer"),
        ("trainer.callbacks[1]._target_", "shutil.copy"),
    ]
    with pytest.raises(ConfigError, match=r"trainer\.callbacks\[1\]\._target_=shutil\.copy"):
        check_trusted_targets(config)


def test_a_malformed_trusted_modules_variable_is_refused(monkeypatch) -> None:
    monkeypatch.setenv(TRUSTED_MODULES_VARIABLE, "lab models")
    with pytest.raises(ConfigError, match=f"{TRUSTED_MODULES_VARIABLE}=lab models: 'lab models' is not a module name"):
        trusted_prefixes()


def test_every_target_the_project_ships_is_trusted() -> None:
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        for key, target in targets_in(yaml.safe_load(path.read_text()) or {}):
            locate_trusted(f"{path.relative_to(CONF_DIR)}: {key}", target)
