"""Our guided-diffusion UNet against guided-diffusion's own: the published model's state-dict layout, and the
outputs of a tiny model made with their code (tests/score_models/data/make_guided_unet_fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from preempt.checkpoints import CheckpointError
from preempt.score_models.guided_unet import (
    CHECKPOINT_URL,
    GuidedNoisePredictor,
    GuidedUNet,
    load_guided_unet,
)

DATA = Path(__file__).parent / "data"
MANIFEST = DATA / "guided_unet_256_uncond_manifest.json"
PARITY = DATA / "guided_unet_tiny_parity.pt"


@pytest.fixture(scope="module")
def parity() -> dict:
    return torch.load(PARITY, weights_only=True)


def unpack(weight: dict) -> torch.Tensor:
    """A fixture parameter: 4-bit codes (two per byte, offset by 8) times 2**exponent, exact in float32."""
    packed = weight["codes"]
    nibbles = torch.stack([packed >> 4, packed & 15], dim=1).flatten()
    count = torch.Size(weight["shape"]).numel()
    codes = nibbles[:count].to(torch.float32) - 8
    return codes.reshape(weight["shape"]) * 2.0 ** weight["exponent"]


@pytest.fixture(scope="module")
def tiny_state(parity: dict) -> dict[str, torch.Tensor]:
    return {name: unpack(weight) for name, weight in parity["weights"].items()}


def tiny_unet(parity: dict, state: dict[str, torch.Tensor]) -> GuidedUNet:
    unet = GuidedUNet(**parity["config"])
    unet.load_state_dict(state, strict=True)
    return unet.eval()


@pytest.fixture(scope="module")
def tiny(parity: dict, tiny_state: dict) -> GuidedUNet:
    """The tiny model in float32, shared: tests that change its dtype build their own."""
    return tiny_unet(parity, tiny_state).requires_grad_(False)


@pytest.fixture(scope="module")
def tiny_output(parity: dict, tiny: GuidedUNet) -> torch.Tensor:
    with torch.no_grad():
        return tiny(parity["x"], parity["timesteps"])


def test_published_architecture_has_the_checkpoints_names_shapes_and_order() -> None:
    manifest = json.loads(MANIFEST.read_text())
    with torch.device("meta"):
        unet = GuidedUNet()
    ours = [[name, list(tensor.shape)] for name, tensor in unet.state_dict().items()]
    assert ours == manifest["parameters"]
    assert sum(parameter.numel() for parameter in unet.parameters()) == manifest["parameter_count"] == 552_814_086


def test_tiny_model_reproduces_guided_diffusions_output(
    parity: dict, tiny: GuidedUNet, tiny_output: torch.Tensor
) -> None:
    assert list(tiny.state_dict()) == list(parity["weights"])  # same order as their model, not only same names
    assert tiny_output.dtype == torch.float32
    torch.testing.assert_close(tiny_output, parity["output"], rtol=0, atol=1e-5)


def test_float16_trunk_converts_what_convert_to_fp16_converts(parity: dict, tiny_state: dict) -> None:
    unet = tiny_unet(parity, tiny_state).set_trunk_dtype(torch.float16)
    for prefix in ("input_blocks", "middle_block", "output_blocks"):
        for name, module in getattr(unet, prefix).named_modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d)):
                assert module.weight.dtype == module.bias.dtype == torch.float16, f"{prefix}.{name}"
            elif isinstance(module, (nn.Linear, nn.GroupNorm)):  # timestep projections and norms stay float32
                assert module.weight.dtype == torch.float32, f"{prefix}.{name}"
    assert all(parameter.dtype == torch.float32 for parameter in unet.time_embed.parameters())
    assert all(parameter.dtype == torch.float32 for parameter in unet.out.parameters())
    unet.set_trunk_dtype(torch.float32)
    assert all(parameter.dtype == torch.float32 for parameter in unet.parameters())


def test_float16_trunk_matches_guided_diffusions_float16_run(parity: dict, tiny_state: dict) -> None:
    unet = tiny_unet(parity, tiny_state).set_trunk_dtype(torch.float16)
    try:
        with torch.no_grad():
            output = unet(parity["x"], parity["timesteps"])
    except (RuntimeError, NotImplementedError) as error:  # half convolutions are missing from some CPU builds
        pytest.skip(f"this torch build cannot run float16 convolutions on the CPU: {error}")
    assert output.dtype == torch.float32  # the head runs in float32
    # Outputs are O(1) (max |y| ≈ 3); float16 rounding across ~20 layers moves them by ~1e-2 at most. Their own
    # float16 run differs from their float32 run by 6e-3; ours differs from theirs only in rounding order.
    torch.testing.assert_close(output, parity["output_fp16"].float(), rtol=0, atol=1e-2)
    torch.testing.assert_close(output, parity["output"], rtol=0, atol=2e-2)


def test_noise_predictor_passes_1000t_as_a_long_and_drops_the_variance(
    parity: dict, tiny: GuidedUNet, tiny_output: torch.Tensor
) -> None:
    predictor = GuidedNoisePredictor(tiny)
    assert predictor.image_shape == (3, 16, 16)
    seen = []
    hook = tiny.register_forward_pre_hook(lambda _module, args: seen.append(args[1]))
    try:
        with torch.no_grad():
            # DiffPure's (t.float() * 1000).long(): 0.251 is 0.25099999 in float32, so step 250 (rounding, or
            # multiplying in float64, would give 251).
            predicted = predictor(parity["x"], torch.tensor([0.0, 0.251, 1.0], dtype=torch.float64))
    finally:
        hook.remove()
    assert seen[0].dtype == torch.int64
    assert seen[0].tolist() == parity["timesteps"].tolist() == [0, 250, 1000]
    assert predicted.shape == parity["x"].shape
    torch.testing.assert_close(predicted, tiny_output[:, :3], rtol=0, atol=0)


def test_load_guided_unet_loads_a_checkpoint_strictly(parity: dict, tiny_state: dict, tmp_path: Path) -> None:
    path = tmp_path / "tiny.pt"
    torch.save(tiny_state, path)
    predictor = load_guided_unet(path, fp16=False, **parity["config"])
    assert isinstance(predictor, GuidedNoisePredictor)
    assert not predictor.training
    assert all(not parameter.requires_grad for parameter in predictor.parameters())
    loaded = predictor.unet.state_dict()
    assert list(loaded) == list(tiny_state)
    for name, tensor in tiny_state.items():
        assert loaded[name].device.type == "cpu"
        assert torch.equal(loaded[name], tensor), name

    half = load_guided_unet(path, fp16=True, **parity["config"])
    assert half.unet.trunk_dtype == torch.float16
    assert half.unet.input_blocks[0][0].weight.dtype == torch.float16
    assert half.unet.out[2].weight.dtype == torch.float32


def test_load_guided_unet_names_the_file_and_the_mismatches(parity: dict, tiny_state: dict, tmp_path: Path) -> None:
    wrong = dict(tiny_state)
    wrong["out.2.weight"] = torch.zeros(3, 32, 3, 3)
    del wrong["out.2.bias"]
    wrong["label_emb.weight"] = torch.zeros(10, 128)
    path = tmp_path / "wrong.pt"
    torch.save(wrong, path)
    with pytest.raises(CheckpointError) as raised:
        load_guided_unet(path, fp16=False, **parity["config"])
    message = str(raised.value)
    assert str(path) in message
    assert "missing out.2.bias" in message
    assert "unexpected label_emb.weight" in message
    assert "out.2.weight has shape (3, 32, 3, 3), the model (6, 32, 3, 3)" in message


def test_load_guided_unet_says_where_a_missing_checkpoint_comes_from(tmp_path: Path) -> None:
    path = tmp_path / "guided_diffusion" / "256x256_diffusion_uncond.pt"
    with pytest.raises(CheckpointError) as raised:
        load_guided_unet(path)
    assert str(path) in str(raised.value)
    assert CHECKPOINT_URL in str(raised.value)
