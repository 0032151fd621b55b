"""What is known of a model before it is built (its declared spec) and after (logits, or labels only)."""

import torch
from torch import nn

from preempt.parts import LabelOnly, ModelSpec, assign_labels, declares_spec, spec_of


@declares_spec(lambda size=4, **settings: ModelSpec(input_shape=(1, size, size), num_classes=3))
def loader(size: int = 4, seed: int = 0) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(size * size, 3))


class Truth(LabelOnly):
    def labels(self, x, y, index, num_classes):
        return y


def test_a_declared_spec_follows_the_settings_and_an_undeclared_one_is_none() -> None:
    assert spec_of(loader, {"size": 8, "seed": 1}) == ModelSpec(input_shape=(1, 8, 8), num_classes=3)
    assert spec_of(lambda: None, {}) is None


def test_labels_are_a_models_top_class_or_a_label_only_models_own() -> None:
    torch.manual_seed(0)
    model, x, y = loader(), torch.rand(5, 1, 4, 4), torch.tensor([2, 0, 1, 1, 0])
    assert torch.equal(assign_labels(model, x, y, torch.arange(5), 3), model(x).argmax(dim=1))
    assert torch.equal(assign_labels(Truth(), x, y, torch.arange(5), 3), y)
