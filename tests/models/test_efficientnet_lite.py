"""EfficientNet-Lite0/1/2 from the registry wheels: real ImageNet classifiers, loaded offline by position."""

from collections import OrderedDict

import pytest
import torch
from conftest import accuracy

from preempt.checkpoints import CheckpointError
from preempt.datasets.package_samples import imagenet_samples
from preempt.models.efficientnet_lite import MEAN, STD, load_efficientnet_lite, renamed_by_position, weights_file


@pytest.fixture(scope="module")
def samples_224():
    data = imagenet_samples(image_size=224)
    return data.images, data.labels


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_each_variant_classifies_the_shipped_imagenet_photos(variant: int, samples_224) -> None:
    """Measured 0.85, 1.00 and 0.85 top-1 on the 20 photos at 224 (0.90 for Lite1 at its native 240)."""
    model = load_efficientnet_lite(variant)
    assert model.input_shape == (3, 224, 224) and not model.training
    assert accuracy(model, *samples_224) >= 0.8


def test_the_models_own_normalization_is_inside(samples_224) -> None:
    """The TF-Lite statistics are applied inside: on raw [0,1] pixels the model agrees with the network fed
    (x - 0.498) / 0.502, and ImageNet's usual statistics would score worse."""
    model = load_efficientnet_lite(0)
    x, y = samples_224
    with torch.no_grad():
        ours = model(x)
        by_hand = model.network((x - MEAN[0]) / STD[0])
        imagenet_stats = model.network((x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / 0.226)
    assert torch.allclose(ours, by_hand, atol=1e-5)
    assert (imagenet_stats.argmax(1) == y).float().mean() < (ours.argmax(1) == y).float().mean()


def test_another_input_size_is_declared_and_checked() -> None:
    model = load_efficientnet_lite(1, input_size=240)
    assert model.input_shape == (3, 240, 240)
    assert model(torch.rand(1, 3, 240, 240)).shape == (1, 1000)
    with pytest.raises(ValueError, match="expects images of shape 3×240×240"):
        model(torch.rand(1, 3, 224, 224))


def test_weights_of_another_count_or_shape_are_refused_naming_the_file() -> None:
    path = weights_file(0)
    source = torch.load(path, weights_only=True)  # as the architecture expects them, so the target here
    with pytest.raises(CheckpointError, match=f"{path} holds 295 tensors where the architecture has 296"):
        renamed_by_position(OrderedDict(list(source.items())[:-1]), source, path)
    first = next(iter(source))
    wrong = OrderedDict(source, **{first: torch.zeros(1)})
    with pytest.raises(CheckpointError, match=rf"{path}: tensor 0 \({first}\) has shape \(1,\)"):
        renamed_by_position(wrong, source, path)
