"""DDPM++ (score_sde's CIFAR-10 model): the published layout, numerical parity with the original code, and loading
score_sde's training checkpoints. The reference data was made from score_sde's own code by
data/make_ddpmpp_fixtures.py; nothing here needs the network or the real checkpoint."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from preempt.checkpoints import CheckpointError
from preempt.score_models.ddpmpp import DDPMpp, DDPMppNoisePredictor, load_ddpmpp

DATA = Path(__file__).parent / "data"
TINY = {"nf": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (8,), "image_size": 16}


def test_published_config_has_the_checkpoint_layout():
    manifest = json.loads((DATA / "ddpmpp_cifar10_manifest.json").read_text())
    with torch.device("meta"):
        network = DDPMpp()
    state = network.state_dict()
    assert [[name, list(tensor.shape)] for name, tensor in state.items()] == manifest["state_dict"]
    assert {name: str(tensor.dtype) for name, tensor in state.items() if tensor.dtype != torch.float32} == manifest[
        "non_float32"
    ]
    norms = {name: [m.num_groups, m.eps] for name, m in network.named_modules() if isinstance(m, nn.GroupNorm)}
    assert norms == manifest["group_norms"]  # the cap of 32 groups only shows at this width
    # The EMA's shadow_params follow parameters(); the original's parameters() is its state_dict without buffers.
    assert manifest["parameters_order_equals_state_dict_order"]
    buffers = set(manifest["buffers"])
    assert [name for name, _ in network.named_parameters()] == [name for name in state if name not in buffers]
    assert sum(p.numel() for p in network.parameters()) == manifest["parameter_count"] == 106_632_579


def test_tiny_network_reproduces_the_original_output():
    fixture = torch.load(DATA / "ddpmpp_tiny_parity.pt", weights_only=True)
    network = DDPMpp(**fixture["config"])
    # the unused noise-level buffer, computed here, equals the original's (the EMA path keeps this one)
    torch.testing.assert_close(network.sigmas, fixture["state_dict"]["sigmas"], rtol=1e-12, atol=0)
    network.load_state_dict(fixture["state_dict"], strict=True)
    network.eval()
    with torch.no_grad():
        output = network(fixture["x"], fixture["labels"])
    torch.testing.assert_close(output, fixture["output"], atol=1e-5, rtol=0)


def _tiny(seed: int) -> DDPMpp:
    torch.manual_seed(seed)
    return DDPMpp(**TINY)


def _data_parallel_state(model: nn.Module) -> dict:
    """What `nn.DataParallel(model).state_dict()` saves, without the wrapper (which moves a model to a GPU if any)."""
    return {f"module.{name}": tensor for name, tensor in model.state_dict().items()}


def _adam_state(parameters: list[torch.Tensor]) -> dict:
    """Adam's state_dict as torch 1.x, which wrote the real file, saved it after training: plain-int steps, a
    tuple of betas, the moments for every parameter (built by hand: a real step costs seconds of imports here)."""
    moments = {
        index: {"step": 950_000, "exp_avg": torch.randn_like(p), "exp_avg_sq": torch.rand_like(p)}
        for index, p in enumerate(parameters)
    }
    group = {"lr": 2e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False}
    return {"state": moments, "param_groups": [{**group, "params": list(range(len(parameters)))}]}


def _training_checkpoint(path: Path, model: DDPMpp, ema: DDPMpp, shadow: list[torch.Tensor] | None = None) -> Path:
    """A file shaped like score_sde's checkpoints: the DataParallel-wrapped model's state (`module.` keys), the Adam
    state, the EMA's state_dict and the step count."""
    shadow = [p.detach().clone() for p in ema.parameters()] if shadow is None else shadow
    torch.save(
        {
            "optimizer": _adam_state(list(model.parameters())),
            "model": _data_parallel_state(model),
            "ema": {"decay": 0.9999, "num_updates": 950_000, "shadow_params": shadow},
            "step": 950_001,
        },
        path,
    )
    return path


def _assert_same_parameters(actual: nn.Module, expected: nn.Module) -> None:
    for (name, got), want in zip(actual.named_parameters(), expected.parameters(), strict=True):
        assert torch.equal(got, want), name


def test_load_takes_the_ema_weights_by_default_and_the_raw_ones_on_request(tmp_path):
    model, ema = _tiny(0), _tiny(1)
    path = _training_checkpoint(tmp_path / "checkpoint_8.pth", model, ema)
    assert list(torch.load(path, weights_only=True)["model"])[1].startswith("module.all_modules.0.")

    loaded = load_ddpmpp(path, **TINY)
    assert isinstance(loaded, DDPMppNoisePredictor)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert loaded.image_shape == (3, 16, 16)
    _assert_same_parameters(loaded.network, ema)

    raw = load_ddpmpp(str(path), ema=False, **TINY)
    _assert_same_parameters(raw.network, model)
    assert not raw.training and not any(p.requires_grad for p in raw.parameters())


def test_load_accepts_a_plain_state_dict(tmp_path):
    model = _tiny(2)
    torch.save(_data_parallel_state(model), tmp_path / "plain.pt")
    _assert_same_parameters(load_ddpmpp(tmp_path / "plain.pt", **TINY).network, model)


def test_ema_of_another_architecture_is_refused_naming_the_file(tmp_path):
    model = _tiny(0)
    shadow = [p.detach().clone() for p in model.parameters()]
    short = _training_checkpoint(tmp_path / "short.pth", model, model, shadow[:-1])
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(short))}.*holds {len(shadow) - 1} tensors"):
        load_ddpmpp(short, **TINY)

    shadow[5] = torch.zeros(7)
    name = [name for name, _ in model.named_parameters()][5]
    reshaped = _training_checkpoint(tmp_path / "reshaped.pth", model, model, shadow)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(reshaped))}.*#5 is shaped \(7,\).*\({name}\)"):
        load_ddpmpp(reshaped, **TINY)

    with pytest.raises(CheckpointError, match=rf"{re.escape(str(reshaped))}.*'model' entry does not fit"):
        load_ddpmpp(reshaped, ema=False, nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,))


def test_missing_checkpoint_says_where_it_comes_from_and_where_it_goes(tmp_path):
    path = tmp_path / "score_sde" / "cifar10_ddpmpp_deep_continuous" / "checkpoint_8.pth"
    with pytest.raises(CheckpointError) as raised:
        load_ddpmpp(path)
    message = str(raised.value)
    assert f"place it at {path}" in message
    assert "vp/cifar10_ddpmpp_deep_continuous/checkpoint_8.pth" in message
    assert "score_sde_pytorch" in message and "DiffPure" in message


def test_predictor_feeds_the_network_999_t():
    network = DDPMpp(nf=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), image_size=8).eval()
    predictor = DDPMppNoisePredictor(network)
    seen = []
    network.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([0.25, 0.8])
    with torch.no_grad():
        output = predictor(x, t)
        direct = network(x, 999 * t)
    torch.testing.assert_close(seen[0], 999 * t)
    torch.testing.assert_close(output, direct)
    assert output.shape == x.shape and predictor.image_shape == (3, 8, 8)
