"""The reversion contract: the man in the middle's guess of the originals; blind ones are transforms used as is."""

import torch

from preempt.parts import Identity, NoReversion, Reversion, revert
from preempt.parts.reversion import BLIND, NONE


class Halve(Reversion):
    def __call__(self, protected, y, index):
        return protected / 2


def test_no_reversion_is_the_identity_and_knows_nothing() -> None:
    x = torch.rand(2, 1, 4, 4)
    assert torch.equal(NoReversion()(x, torch.zeros(2), torch.arange(2)), x)
    assert NoReversion.knowledge == NONE and NoReversion.label({}) == "none"
    assert Reversion.knowledge == BLIND and Halve.knowledge_of({}) == BLIND and Halve.label({}) == "Halve"


def test_revert_runs_a_reversion_or_a_transform_detached() -> None:
    x = torch.rand(2, 1, 4, 4, requires_grad=True)
    y, index = torch.zeros(2), torch.arange(2)
    halved = revert(Halve(), x, y, index)
    assert torch.equal(halved, x.detach() / 2) and not halved.requires_grad
    transformed = revert(Identity(), x, y, index)
    assert torch.equal(transformed, x.detach()) and not transformed.requires_grad
