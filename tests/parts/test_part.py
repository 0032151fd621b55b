"""The contract shared by every part: the models it is given (not config keys), its warnings, its table name."""

from torch import nn

from preempt.parts import ConfigError, Defense, Part, held_models


class Holder(Part):
    bound = ("backbone", "helper")

    def __init__(self, backbone=None, helper=None, inner: Part | None = None) -> None:
        self.backbone, self.helper, self.inner = backbone, helper, inner


def test_a_part_is_given_the_bound_models_its_settings_leave_unset() -> None:
    assert Holder.models_to_bind({"backbone": None, "helper": None}) == ("backbone", "helper")
    assert Holder.models_to_bind({"backbone": None, "helper": "set already"}) == ("backbone",)
    assert Part.models_to_bind({}) == () and Defense.bound == ("backbone",)


def test_the_defaults_name_the_class_warn_of_nothing_and_take_any_images() -> None:
    part = Holder()
    assert Holder.label({}) == "Holder" and part.warnings() == []
    assert part.check_fits((3, 32, 32)) is None


def test_held_models_include_those_of_the_parts_a_part_holds() -> None:
    backbone, inner_model = nn.Linear(2, 2), nn.Linear(2, 3)
    part = Holder(backbone=backbone, helper="not a model", inner=Holder(backbone=inner_model))
    assert held_models(part, "defense") == {"defense_backbone": backbone, "defense_inner_backbone": inner_model}


def test_a_config_error_is_a_value_error_so_loaders_may_raise_either() -> None:
    assert issubclass(ConfigError, ValueError)
