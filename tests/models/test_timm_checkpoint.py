"""`model=timm`: a timm architecture with weights from the user's file, checked on real ImageNet weights (Lite0's,
saved as a trainer would) and real photos; every refusal names the key or the file."""

import argparse
from pathlib import Path

import pytest
import timm
import torch

from preempt.checkpoints import CheckpointError
from preempt.datasets.package_samples import imagenet_samples
from preempt.models.efficientnet_lite import MEAN, STD
from preempt.models.timm_checkpoint import load_timm_model, pretrained_config, state_dict_in
from preempt.parts import ConfigError, ModelSpec, spec_of
from preempt.validation import validate_config


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return imagenet_samples(image_size=224, n_samples=4).images


@pytest.fixture(scope="module")
def checkpoints(lite0, own_model_files, tmp_path_factory) -> dict[str, Path]:
    """Lite0's weights in the three layouts the loader finds: bare, a DataParallel model's under `state_dict`
    beside other training state, and under `model` (torchvision's reference scripts)."""
    folder = tmp_path_factory.mktemp("timm_checkpoints")
    state = lite0.network.state_dict()
    wrapped = {f"module.{name}": tensor for name, tensor in state.items()}
    torch.save({"state_dict": wrapped, "epoch": 90, "optimizer": {"lr": torch.tensor(0.1)}}, folder / "trained.pth")
    torch.save({"model": state}, folder / "reference.pth")
    return {
        "bare": Path(own_model_files["checkpoint"]),
        "state_dict": folder / "trained.pth",
        "model": folder / "reference.pth",
    }


@pytest.mark.parametrize("layout", ["bare", "state_dict", "model"])
def test_each_checkpoint_layout_scores_as_the_model_it_was_saved_from(layout, checkpoints, lite0, photos) -> None:
    model = load_timm_model("efficientnet_lite0", str(checkpoints[layout]), mean=MEAN, std=STD)
    assert model.input_shape == (3, 224, 224) and not model.training and not model.network.training
    with torch.no_grad():
        ours, theirs = model(photos), lite0(photos)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.equal(ours.argmax(1), theirs.argmax(1))


def test_unset_preprocessing_comes_from_timm_s_pretrained_config_without_building_a_model(monkeypatch) -> None:
    def no_building(*args, **kwargs):
        raise AssertionError("the spec built a model")

    monkeypatch.setattr(timm, "create_model", no_building)
    assert spec_of(load_timm_model, {"architecture": "inception_v3", "checkpoint": "x"}) == ModelSpec(
        (3, 299, 299), 1000
    )
    settings = {"architecture": "resnet50", "checkpoint": "x", "num_classes": 10, "input_size": 160}
    assert spec_of(load_timm_model, settings) == ModelSpec((3, 160, 160), 10)
    vit = pretrained_config("vit_base_patch16_384")
    assert vit.input_size == (3, 384, 384) and vit.mean == vit.std == (0.5, 0.5, 0.5)
    assert pretrained_config("resnet50.tv_in1k").mean == (0.485, 0.456, 0.406)  # a tag picks that recipe's


def test_the_pretrained_config_s_mean_and_std_are_applied_inside(checkpoints, lite0, photos) -> None:
    """Without mean/std the model normalizes as timm's efficientnet_lite0 recipe does (ImageNet's statistics)."""
    model = load_timm_model("efficientnet_lite0", str(checkpoints["bare"]))
    imagenet_mean, imagenet_std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(model.mean.flatten(), imagenet_mean) and torch.allclose(model.std.flatten(), imagenet_std)
    with torch.no_grad():
        expected = lite0.network((photos - imagenet_mean.view(1, 3, 1, 1)) / imagenet_std.view(1, 3, 1, 1))
        assert torch.allclose(model(photos), expected, atol=1e-5)


def test_a_checkpoint_of_pickled_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "with_args.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(CheckpointError, match=f"{path} holds pickled Python objects"):
        load_timm_model("efficientnet_lite0", str(path))


def test_weights_of_another_architecture_or_head_are_refused_naming_the_file(checkpoints, tmp_path: Path) -> None:
    path = checkpoints["bare"]
    with pytest.raises(CheckpointError, match=rf"{path} does not fit timm's efficientnet_lite1 .*keys missing \(first"):
        load_timm_model("efficientnet_lite1", str(path))
    with pytest.raises(CheckpointError, match=rf"{path} .* classifier.weight has shape \(1000, 1280\) .* \(10, 1280\)"):
        load_timm_model("efficientnet_lite0", str(path), num_classes=10)
    extra = tmp_path / "extra.pth"
    torch.save({**torch.load(path, weights_only=True), "extra": torch.zeros(1)}, extra)
    with pytest.raises(CheckpointError, match=rf"{extra} does not fit .*: 1 keys unexpected \(first: extra\)"):
        load_timm_model("efficientnet_lite0", str(extra))


def test_a_checkpoint_without_a_state_dict_where_one_is_looked_for_is_refused_naming_its_keys() -> None:
    path = Path("trained.pth")
    with pytest.raises(CheckpointError, match=r"trained.pth is neither .* its keys: epoch, ema. Set state_d"):
        state_dict_in({"epoch": 3, "ema": {"w": torch.zeros(1)}}, path, None)
    assert state_dict_in({"epoch": 3, "ema": {"w": torch.zeros(1)}}, path, "ema").keys() == {"w"}
    with pytest.raises(CheckpointError, match=r"trained.pth has no key 'state_dict_ema' \(state_dict_key\)"):
        state_dict_in({"epoch": 3}, path, "state_dict_ema")


@pytest.mark.parametrize(
    ("architecture", "refusal"),
    [
        ("efficientnet_lit0", r"victim.architecture='efficientnet_lit0': .*did you mean efficientnet_lite0"),
        ("resnet50.no_such_tag", r"victim.architecture=.* no pretrained tag 'no_such_tag' for resnet50; .*tv_in1k"),
    ],
    ids=["misspelt", "unknown_tag"],
)
def test_an_unknown_architecture_is_refused_at_validation_with_close_names(
    architecture, refusal, own_model_files, compose_config
) -> None:
    cfg = compose_config(
        "victim=timm", f"victim.architecture={architecture}", f"victim.checkpoint={own_model_files['checkpoint']}"
    )
    with pytest.raises(ConfigError, match=refusal):
        validate_config(cfg)


def test_a_missing_checkpoint_is_refused_at_validation_naming_it(tmp_path: Path, compose_config) -> None:
    missing = tmp_path / "resnet50.pth"
    cfg = compose_config("victim=timm", "victim.architecture=resnet50", f"victim.checkpoint={missing}")
    with pytest.raises(ConfigError, match=f"victim.checkpoint=.*no file {missing}: put the weight file there"):
        validate_config(cfg)
