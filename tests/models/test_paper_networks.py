"""The papers' networks build offline at their published sizes, the committed FLOPs are theirs, a pass is timed."""

import socket
from pathlib import Path

import pytest
import torch

from preempt.models import PixelClassifier
from preempt.models.paper_networks import (
    NETWORK_FLOPS_FILE,
    PAPER_NETWORKS,
    count_parameters,
    load_network_flops,
    time_passes,
    write_network_flops,
)
from preempt.score_models.base import NoisePredictor


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No connection can be opened, and torch hub's folder is an empty one the test can look into afterwards."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("this test forbids network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    yield tmp_path
    torch.hub.set_dir(previous)


@pytest.mark.parametrize("key", list(PAPER_NETWORKS))
def test_each_network_builds_offline_with_its_published_size_and_the_loaders_interface(key: str, offline: Path) -> None:
    network = PAPER_NETWORKS[key]
    module = network.build("meta")
    assert list(offline.iterdir()) == []  # nothing downloaded into torch hub
    assert count_parameters(module) / 1e6 == pytest.approx(network.parameters_m, rel=0.01)
    assert not module.training
    inputs = network.example_inputs(2, "meta", torch.float32)
    if network.kind == "classifier":
        assert isinstance(module, PixelClassifier) and module.input_shape == network.input_shape
        assert module(*inputs).shape[0] == 2
    else:
        assert isinstance(module, NoisePredictor) and module.image_shape == network.input_shape
        assert module(*inputs).shape == inputs[0].shape


def test_the_committed_flops_file_is_what_the_networks_count_now(tmp_path: Path) -> None:
    fresh = tmp_path / "network_flops.json"
    write_network_flops(fresh)
    assert fresh.read_text() == NETWORK_FLOPS_FILE.read_text(), (
        "network_flops.json is stale: run `.venv/bin/python -c 'from preempt.models.paper_networks import "
        "write_network_flops; write_network_flops()'`"
    )


def test_the_flops_are_positive_and_ordered_as_the_architectures_are() -> None:
    gflops = {key: entry["forward_gflops_per_image"] for key, entry in load_network_flops().items()}
    assert set(gflops) == set(PAPER_NETWORKS) and min(gflops.values()) > 0
    assert gflops["Peng2023Robust"] > 50 * gflops["Gowal2021Improving_R18_ddpm_100m"]
    assert gflops["Liu2023Comprehensive_Swin-L"] > gflops["Standard_R50"]
    assert gflops["guided_imagenet256"] > gflops["ddpmpp_cifar10"]
    assert 7.5 < gflops["Standard_R50"] < 8.5  # ResNet-50's well-known 4.1 GMACs at 224×224


def test_a_small_network_is_timed_on_the_cpu() -> None:
    timing = time_passes(PAPER_NETWORKS["autoattack_resnet18"], "cpu", batch_size=2, repeats=1)
    assert set(timing) == {
        "key",
        "device",
        "input_shape",
        "batch_size",
        "dtype",
        "forward_backward_s_per_img",
        "forward_s_per_img",
        "peak_mib",
        "parameters_m",
        "error",
    }
    assert timing["error"] is None and timing["batch_size"] == 2 and timing["dtype"] == "float32"
    assert 0 < timing["forward_s_per_img"] < timing["forward_backward_s_per_img"]
    assert timing["peak_mib"] is None or timing["peak_mib"] >= 0


def test_out_of_memory_is_reported_in_the_result_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*args: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr("preempt.models.paper_networks._measure", out_of_memory)
    timing = time_passes(PAPER_NETWORKS["Peng2023Robust"], "cpu")
    assert timing["error"] == "out of memory at batch 250"
    assert timing["forward_backward_s_per_img"] is None and timing["peak_mib"] is None
