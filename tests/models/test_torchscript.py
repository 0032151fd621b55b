"""`model=torchscript`: the user's network saved as TorchScript, loaded on the CPU, normalized by the settings or
by itself; a file torch cannot load is refused naming it."""

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from preempt.checkpoints import CheckpointError
from preempt.datasets.package_samples import imagenet_samples
from preempt.models.efficientnet_lite import MEAN, STD
from preempt.models.torchscript import load_torchscript_model
from preempt.parts import ConfigError, ModelSpec, spec_of
from preempt.validation import validate_config


class SelfNormalizing(nn.Module):
    """A network that takes [0,1] pixels itself, as a file saved with its preprocessing does."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x.flatten(1) - 0.5) / 0.25)


def test_traced_lite0_scores_as_lite0_with_its_mean_and_std(own_model_files, lite0) -> None:
    photos = imagenet_samples(image_size=224, n_samples=4).images
    model = load_torchscript_model(own_model_files["file"], mean=MEAN, std=STD)
    assert model.input_shape == (3, 224, 224) and not model.training
    with torch.no_grad():
        ours, theirs = model(photos), lite0(photos)
    assert torch.allclose(ours, theirs, atol=1e-5) and torch.equal(ours.argmax(1), theirs.argmax(1))


def test_a_scripted_network_that_normalizes_itself_takes_the_pixels_as_they_are(tmp_path: Path) -> None:
    network = SelfNormalizing().eval()
    torch.jit.save(torch.jit.script(network), tmp_path / "tiny.pt")
    model = load_torchscript_model(str(tmp_path / "tiny.pt"), input_shape=(3, 8, 8), num_classes=5)
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    assert torch.allclose(model(x), network(x), atol=1e-6)
    model(x).sum().backward()  # attacks need the gradient of the input
    assert x.grad is not None and all(not p.requires_grad for p in model.parameters())


def test_the_spec_is_the_settings_and_reads_no_file() -> None:
    settings = {"file": "nowhere.pt", "input_shape": [1, 28, 28], "num_classes": 10}
    assert spec_of(load_torchscript_model, settings) == ModelSpec((1, 28, 28), 10)
    assert spec_of(load_torchscript_model, {"file": "nowhere.pt"}) == ModelSpec((3, 224, 224), 1000)


@pytest.mark.parametrize(
    ("content", "refusal"),
    [
        (b"not a model" * 10, "is not a TorchScript file torch can load .*failed reading zip archive"),
        (None, "is not a TorchScript file torch can load"),  # a state dict: a zip, but no TorchScript code
        (b"", "is empty"),
    ],
    ids=["corrupt", "state_dict", "empty"],
)
def test_a_file_torch_cannot_load_is_refused_naming_it(content, refusal, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    if content is None:
        torch.save(SelfNormalizing().state_dict(), path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"{path} {refusal}"):
        load_torchscript_model(str(path), input_shape=(3, 8, 8), num_classes=5)


def test_a_scripted_network_with_non_finite_weights_is_refused_naming_the_file_and_the_tensor(tmp_path: Path) -> None:
    network = SelfNormalizing().eval()
    with torch.no_grad():
        network.linear.bias[1] = float("nan")
    path = tmp_path / "nan.pt"
    torch.jit.save(torch.jit.script(network), path)
    refusal = f"checkpoint {path} holds non-finite weights: linear.bias has 1 NaN or inf values (of 5)"
    with pytest.raises(CheckpointError, match=re.escape(refusal)):
        load_torchscript_model(str(path), input_shape=(3, 8, 8), num_classes=5)


def test_a_mean_without_a_std_is_refused(own_model_files) -> None:
    with pytest.raises(ValueError, match="mean and std normalize together"):
        load_torchscript_model(own_model_files["file"], mean=MEAN)


def test_a_missing_file_is_refused_at_validation_naming_it(tmp_path: Path, compose_config) -> None:
    missing = tmp_path / "mine.pt"
    with pytest.raises(ConfigError, match=f"victim.file=.*no file {missing}: put the weight file there"):
        validate_config(compose_config("victim=torchscript", f"victim.file={missing}"))
