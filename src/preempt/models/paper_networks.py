"""The networks the papers' scale runs, built with random weights so their cost can be measured without the files.

Each paper network is its real architecture, built the way its loader builds it (RobustBench's zoo entry, the
DDPM++ and guided-diffusion networks the score-model loaders fill, the shipped ResNet-18 through its own loader) and
wrapped as the loader wraps it, so a pass costs what it costs in a run. Nothing is downloaded: the timm-hosted and
torchvision models are made with `pretrained=False`, where RobustBench would fetch their weights.

`forward_flops` counts one image's forward pass on the meta device (no weights allocated, seconds for all of them);
`network_flops.json` beside this file keeps those counts so a cost model can read them without building anything.
`time_passes` measures a forward and an input-gradient pass on a real device at the presets' batch sizes.
"""

from __future__ import annotations

import contextlib
import gc
import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from preempt.models.autoattack_resnet import load_autoattack_resnet18
from preempt.models.pixel_classifier import PixelClassifier
from preempt.models.robustbench import INPUT_SHAPES, NUM_CLASSES, _import_robustbench, _timm_name
from preempt.score_models.ddpmpp import DDPMpp, DDPMppNoisePredictor
from preempt.score_models.guided_unet import GuidedNoisePredictor, GuidedUNet

NETWORK_FLOPS_FILE = Path(__file__).with_name("network_flops.json")
# A time inside DiffPure's reverse SDE (its t* is 0.1 on CIFAR-10, 0.15 on ImageNet); the cost does not depend on it.
SCORE_TIME = 0.1
# torchvision's ImageNet statistics, which RobustBench's `Standard_R50` normalizes with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _robustbench_network(name: str, dataset: str, threat_model: str) -> nn.Module:
    """The architecture `robustbench.utils.load_model` fills with weights, choosing it as load_model does."""
    import timm

    _, model_dicts, benchmark_dataset, threat = _import_robustbench()
    timm_name = _timm_name(name, dataset, threat_model)
    if timm.is_model(timm_name):  # load_model asks timm for these with pretrained=True, which downloads
        return timm.create_model(timm_name, num_classes=NUM_CLASSES[dataset], pretrained=False)
    if name == "Standard_R50":  # the zoo's entry is torchvision's resnet50(pretrained=True), which downloads
        import torchvision
        from robustbench.model_zoo.architectures.utils_architectures import normalize_model

        return normalize_model(torchvision.models.resnet50(weights=None), IMAGENET_MEAN, IMAGENET_STD)
    return model_dicts[benchmark_dataset(dataset)][threat(threat_model)][name]["model"]()


def _robustbench(name: str, dataset: str, threat_model: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        network = _robustbench_network(name, dataset, threat_model)
        return PixelClassifier(network, name=name, input_shape=INPUT_SHAPES[dataset])

    return build


@dataclass(frozen=True)
class PaperNetwork:
    """One network of the papers' scale: its config option, what it computes, its input and the presets' batch."""

    key: str  # the option name in conf/model/ or conf/score_model/
    # "classifier": [0,1] pixels → logits; "score_model": a NoisePredictor ε̂(x in [-1,1], t)
    kind: Literal["classifier", "score_model"]
    input_shape: tuple[int, int, int]
    batch_size: int  # the largest batch a preset runs it at
    parameters_m: float  # millions of parameters, as the published model has them
    builder: Callable[[], nn.Module] = field(repr=False, compare=False)

    def build(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
        """The real architecture with random weights, in eval mode and frozen; on "meta" nothing is allocated."""
        device = torch.device(device)
        with _weights_on_meta() if device.type == "meta" else device:
            module = self.builder()
        if device.type == "meta":
            _plain_tensors_to_meta(module)
        return module.to(device=device, dtype=dtype).eval().requires_grad_(False)

    def example_inputs(self, batch_size: int, device: str | torch.device, dtype: torch.dtype) -> tuple[Tensor, ...]:
        """What a run feeds it: pixels in [0,1] for a classifier; for a score model, as DiffPure's reverse SDE calls
        it, a diffused image in [-1,1] and one continuous VP time per image."""
        x = torch.rand(batch_size, *self.input_shape, device=device, dtype=dtype)
        if self.kind == "classifier":
            return (x,)
        return 2 * x - 1, torch.full((batch_size,), SCORE_TIME, device=device, dtype=dtype)


@contextlib.contextmanager
def _weights_on_meta() -> Iterator[None]:
    """Put every parameter on the meta device as it is registered, so the initialisation that follows costs nothing.

    A plain `torch.device("meta")` context fails for timm's Swin, ConvNeXt and DeiT, whose constructors read their
    drop-path schedules out of a tensor (`.item()`); here such tensors stay on the CPU. Buffers follow in `build`.
    A loader that fills the weights (the shipped ResNet-18's) then copies into meta tensors, the no-op wanted here.
    """
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, parameter: nn.Parameter | None) -> None:
        if parameter is not None:
            parameter = nn.Parameter(parameter.to("meta"), requires_grad=parameter.requires_grad)
        register(module, name, parameter)

    nn.Module.register_parameter = register_on_meta
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter", category=UserWarning)
            yield
    finally:
        nn.Module.register_parameter = register


def _plain_tensors_to_meta(module: nn.Module) -> None:
    """Move tensors kept as plain attributes, which `.to()` leaves behind, to the meta device: RobustBench's
    WideResNet of Peng2023Robust holds its mean and std so and subtracts them from a meta input unmoved."""
    for submodule in module.modules():
        for name, value in list(vars(submodule).items()):
            if isinstance(value, Tensor):
                setattr(submodule, name, value.to("meta"))


def _paper_networks() -> dict[str, PaperNetwork]:
    cifar, imagenet = INPUT_SHAPES["cifar10"], INPUT_SHAPES["imagenet"]
    networks = [
        # Batch sizes: fast_preemption_table1 250, the other CIFAR-10 presets 50, cifar10_resnet18 20,
        # fast_preemption_imagenet 4, preprocessing_defense 25; a score model runs at its preset's batch.
        PaperNetwork(
            "Peng2023Robust", "classifier", cifar, 250, 267.2, _robustbench("Peng2023Robust", "cifar10", "Linf")
        ),
        PaperNetwork(
            "Gowal2021Improving_R18_ddpm_100m",
            "classifier",
            cifar,
            50,
            12.5,
            _robustbench("Gowal2021Improving_R18_ddpm_100m", "cifar10", "Linf"),
        ),
        PaperNetwork(
            "Debenedetti2022Light_XCiT-L12",
            "classifier",
            cifar,
            50,
            103.0,
            _robustbench("Debenedetti2022Light_XCiT-L12", "cifar10", "Linf"),
        ),
        PaperNetwork(
            "Hendrycks2020AugMix_ResNeXt",
            "classifier",
            cifar,
            50,
            6.8,
            _robustbench("Hendrycks2020AugMix_ResNeXt", "cifar10", "corruptions"),
        ),
        PaperNetwork("autoattack_resnet18", "classifier", cifar, 20, 11.2, load_autoattack_resnet18),
        PaperNetwork(
            "Liu2023Comprehensive_Swin-L",
            "classifier",
            imagenet,
            4,
            196.5,
            _robustbench("Liu2023Comprehensive_Swin-L", "imagenet", "Linf"),
        ),
        PaperNetwork(
            "Singh2023Revisiting_ConvNeXt-L-ConvStem",
            "classifier",
            imagenet,
            4,
            198.1,
            _robustbench("Singh2023Revisiting_ConvNeXt-L-ConvStem", "imagenet", "Linf"),
        ),
        PaperNetwork(
            "Standard_R50", "classifier", imagenet, 25, 25.6, _robustbench("Standard_R50", "imagenet", "Linf")
        ),
        PaperNetwork(
            "Tian2022Deeper_DeiT-B",
            "classifier",
            imagenet,
            4,
            86.6,
            _robustbench("Tian2022Deeper_DeiT-B", "imagenet", "corruptions"),
        ),
        PaperNetwork("ddpmpp_cifar10", "score_model", cifar, 50, 106.6, lambda: DDPMppNoisePredictor(DDPMpp())),
        PaperNetwork(
            "guided_imagenet256", "score_model", (3, 256, 256), 4, 552.8, lambda: GuidedNoisePredictor(GuidedUNet())
        ),
    ]
    return {network.key: network for network in networks}


PAPER_NETWORKS: dict[str, PaperNetwork] = _paper_networks()


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def forward_flops(key: str) -> int:
    """FLOPs of one image's forward pass as FlopCounterMode counts them (matrix products, convolutions and attention;
    not elementwise work), on the meta device."""
    network = PAPER_NETWORKS[key]
    module = network.build("meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*network.example_inputs(1, "meta", torch.float32))
    return counter.get_total_flops()


def measured_flops_table() -> dict[str, dict]:
    """What network_flops.json holds, counted afresh."""
    table = {}
    for key, network in PAPER_NETWORKS.items():
        table[key] = {
            "forward_gflops_per_image": round(forward_flops(key) / 1e9, 6),
            "input_shape": list(network.input_shape),
            "parameters_m": round(count_parameters(network.build("meta")) / 1e6, 3),
        }
    return table


def write_network_flops(path: Path = NETWORK_FLOPS_FILE) -> None:
    """Regenerate network_flops.json after a network changes: one network a line, so a diff shows which moved."""
    lines = [f"  {json.dumps(key)}: {json.dumps(entry)}" for key, entry in measured_flops_table().items()]
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n")


def load_network_flops() -> dict[str, dict]:
    """Each paper network's forward GFLOPs per image, input shape and parameters (millions), without building it."""
    return json.loads(NETWORK_FLOPS_FILE.read_text())


def time_passes(
    network: PaperNetwork,
    device: str | torch.device,
    batch_size: int | None = None,
    repeats: int = 5,
    fp16_trunk: bool | None = None,
) -> dict:
    """Seconds per image of a forward pass and of a forward pass plus an input gradient, at the presets' batch.

    The gradient is what an attack or a defense takes: of cross-entropy against random labels for a classifier, of
    the output's mean for a score model (DiffPure's checkpointed steps add a second forward to that). fp16_trunk
    None runs the guided UNet's trunk in float16 on CUDA, as its loader does. A CUDA out-of-memory error is
    returned as `error`, with no times.
    """
    device = torch.device(device)
    batch_size = batch_size or network.batch_size
    if fp16_trunk is None:
        fp16_trunk = device.type == "cuda"
    half_trunk = fp16_trunk and network.key == "guided_imagenet256"
    result = {
        "key": network.key,
        "device": str(device),
        "input_shape": list(network.input_shape),
        "batch_size": batch_size,
        "dtype": "float16 trunk" if half_trunk else "float32",
        "forward_backward_s_per_img": None,
        "forward_s_per_img": None,
        "peak_mib": None,
        "parameters_m": network.parameters_m,
        "error": None,
    }
    try:
        times = _measure(network, device, batch_size, repeats, half_trunk)
    except torch.cuda.OutOfMemoryError:
        result["error"] = f"out of memory at batch {batch_size}"
    if result["error"] is not None:  # the failed attempt's tensors are free only once the exception is gone
        gc.collect()
        torch.cuda.empty_cache()
        return result
    result["forward_backward_s_per_img"], result["forward_s_per_img"], result["peak_mib"] = times
    return result


def _measure(
    network: PaperNetwork, device: torch.device, batch_size: int, repeats: int, half_trunk: bool
) -> tuple[float, float, float | None]:
    """Seconds per image of forward+backward and of forward, and the peak memory (MiB) of building and running."""
    with _peak_memory(device) as peak:
        module = network.build(device)
        if half_trunk:
            module.unet.set_trunk_dtype(torch.float16)
        inputs = network.example_inputs(batch_size, device, next(module.parameters()).dtype)

        def forward_backward() -> None:
            x = inputs[0].detach().requires_grad_(True)
            output = module(x, *inputs[1:])
            if network.kind == "classifier":
                labels = torch.randint(output.shape[1], (batch_size,), device=device)
                loss = F.cross_entropy(output.float(), labels)
            else:
                loss = output.float().mean()
            torch.autograd.grad(loss, x)

        def forward() -> None:
            with torch.no_grad():
                module(*inputs)

        forward_backward_s = _seconds(forward_backward, device, repeats) / batch_size
        forward_s = _seconds(forward, device, repeats) / batch_size
    return forward_backward_s, forward_s, peak()


def _seconds(run: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Mean seconds of one call after a warm-up call (which pays cuDNN's algorithm search and the allocator)."""
    run()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    _synchronize(device)
    return (time.perf_counter() - start) / repeats


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _peak_memory(device: torch.device) -> Iterator[Callable[[], float | None]]:
    """Peak memory (MiB) over the block: the CUDA allocator's peak on a GPU; on the CPU the growth of the process's
    resident-set high-water mark after resetting it (Linux), or None where it cannot be reset."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield lambda: torch.cuda.max_memory_allocated(device) / 2**20
        return
    start = _reset_rss_peak()
    peak: list[float | None] = [None]
    yield lambda: peak[0]
    if start is not None:
        peak[0] = max(0.0, (_status_kib("VmHWM") - start) / 1024)


def _reset_rss_peak() -> int | None:
    """Reset the process's peak RSS to its current RSS (KiB, returned); None where /proc does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmRSS")
    except OSError:
        return None


def _status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field_name}")
