"""The sender-side contract: a defense is given the backbone, protects within [0,1]; no defense sends as is."""

import pytest
import torch

from preempt.parts import Defense, InputTransform, NoDefense


def test_no_defense_sends_the_images_unchanged_and_needs_no_model() -> None:
    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(NoDefense()(x, torch.zeros(2).long()), x)
    assert NoDefense.bound == () and not NoDefense.protects


def test_a_defense_is_given_the_backbone_and_a_transform_on_the_sender_side_nothing() -> None:
    assert Defense.bound == ("backbone",) and Defense.protects
    assert InputTransform.bound == () and issubclass(InputTransform, Defense)


def test_a_defense_must_say_how_it_protects() -> None:
    with pytest.raises(TypeError, match="abstract"):
        Defense()
