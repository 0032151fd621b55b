"""The signature-as-schema engine: a target's parameters are its keys, its annotations their types and ranges, and
the models it declares bound are no keys at all."""

import pytest
from omegaconf import OmegaConf
from pydantic import ValidationError
from pydantic.dataclasses import dataclass

from preempt.parts import ConfigError, Defense
from preempt.parts.constraints import AtLeastOne, Eps
from preempt.validation.schema import (
    bound_models,
    check_part,
    dry_build,
    nested_models,
    option_name,
    read_section,
    validate_budget_or_refuse,
)


class Toy(Defense):
    def __init__(self, eps: Eps, steps: AtLeastOne = 3, backbone=None) -> None:
        if steps > 10:
            raise ValueError("steps=11 is too many: set defense.steps to 10 or fewer")
        self.eps, self.steps, self.backbone = eps, steps, backbone

    def __call__(self, x, labels):
        return x


TARGET = f"{__name__}.Toy"


@pytest.fixture(autouse=True)
def trust_this_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """The toy parts are defined here, outside the project's package."""
    monkeypatch.setenv("PREEMPT_TRUSTED_MODULES", __name__)


def check(**node) -> tuple:
    cfg = OmegaConf.create({"defense": {"_target_": TARGET, **node}})
    return check_part(cfg, OmegaConf.to_container(cfg), "defense"), cfg


def test_the_signature_is_the_schema_with_values_read_by_their_annotations() -> None:
    (target, settings), cfg = check(eps="8/255")
    assert target is Toy and settings["eps"] == pytest.approx(8 / 255)
    assert cfg.defense.eps == pytest.approx(8 / 255), "the number is written back into the config"


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"eps": 0.1, "stepz": 2}, r"defense\.stepz is not a setting of .*Toy\. Did you mean steps\?"),
        ({}, r"defense\.eps is required by .*Toy: add \+defense\.eps=\.\.\."),
        ({"eps": 0.1, "steps": 0}, r"defense\.steps=0: Input should be greater than or equal to 1"),
        ({"eps": 0.1, "backbone": "mine"}, r"defense\.backbone is not a setting"),  # bound: given at test start
    ],
)
def test_each_refusal_names_the_key_and_the_fix(node: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check(**node)


def test_a_target_that_cannot_be_imported_or_a_group_without_one_is_named() -> None:
    with pytest.raises(ConfigError, match=r"defense\._target_=preempt\.nowhere\.Nothing cannot be imported"):
        check_part(None, {"defense": {"_target_": "preempt.nowhere.Nothing"}}, "defense")
    with pytest.raises(ConfigError, match=r"defense has no _target_: pick one of its options"):
        check_part(None, {"defense": {"eps": 0.1}}, "defense")


def test_a_dry_build_runs_the_parts_own_checks_without_its_models() -> None:
    assert bound_models(Toy) == ("backbone",)
    assert dry_build(Toy, {"eps": 0.1}, "defense").backbone is None
    with pytest.raises(ConfigError, match=r"^defense: steps=11 is too many"):
        dry_build(Toy, {"eps": 0.1, "steps": 11}, "defense")


def test_a_commands_section_is_built_by_its_schema_naming_each_key() -> None:
    @dataclass
    class Recipe:
        steps: AtLeastOne = 1

    assert read_section(Recipe, {"steps": 4}, "recipe").steps == 4
    with pytest.raises(ConfigError, match=r"recipe\.steps=0"):
        read_section(Recipe, {"steps": 0}, "recipe")
    with pytest.raises(ValidationError):
        Recipe(steps=0)


def test_budgets_are_refused_per_norm_and_an_l2_budget_beyond_the_image() -> None:
    validate_budget_or_refuse(0.5, "L2", "threat", (3, 32, 32))
    with pytest.raises(ConfigError, match=r"threat: Linf eps=2 .* 8/255"):
        validate_budget_or_refuse(2, "Linf", "threat")
    with pytest.raises(ConfigError, match=r"largest L2 distance between two 1×4×4 images in \[0,1\] \(4\.0\)"):
        validate_budget_or_refuse(5.0, "L2", "threat", (1, 4, 4))


def test_models_set_inside_a_part_are_found_and_named_by_their_config() -> None:
    container = {"reversion": {"backbone": {"_target_": "x.y", "name": "mine"}, "defense_settings": {"eta": 1}}}
    assert nested_models(container, "reversion") == ["reversion.backbone"]
    assert option_name(container, "reversion.backbone") == "mine"
