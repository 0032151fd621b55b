"""How the sender's backbone passes run fast: chunks sized to a memory budget and the CPU's allocator, the fastest
chunk under that bound found by timing (once per backbone, input shape and device, kept in a file), and opt-in
numerics (bf16 autocast, channels_last, torch.compile, CUDA graphs) for the defense's backbone.

Only the defense's backbone is accelerated: the attack and the scores keep the victim in fp32, so an option can
change the protection's cost and (within its stated tolerance) the protected images, never how they are judged.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import ctypes.util
import datetime
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from preempt.files import exclusive_lock, write_json_atomically
from preempt.fingerprint import digest

MIB = 2**20
# The opt-in numerics of the defense's passes: they change the protected pixels (within a tolerance), so they are
# part of what decides a protection; chunking and the allocator are not.
ACCELERATIONS = ("bf16", "channels_last", "compile", "cuda_graphs")
# The CPU budget (`memory_budget_bytes`) for each of the two things a step of the defense holds at once: one backbone
# pass's saved activations and copies (the allocator rule below usually binds first on model-sized images), and the
# random starts it draws at once.
CPU_MEMORY_BUDGET_MIB = 2048
# Besides its activations, each copy in a pass holds this many tensors of its own size at the peak of an FGSM step
# (its start, gradient, sign, step and the projection's temporaries): what bounds a pass on large photos, whose
# activations are the model's size (measured: 5.1 to 5.6 per copy on a 12-megapixel photo).
STEP_TENSORS_PER_COPY = 6
# On CUDA the budget is this fraction of the memory free when the defense first meets a batch shape.
CUDA_FREE_FRACTION = 0.5
# glibc's malloc serves blocks up to its mmap threshold from memory it keeps and maps every larger block fresh
# from the kernel, unmapping it when freed; it also gives back (trims) freed memory at the top of its heap beyond
# a trim threshold. Both adapt as the process runs (the mmap threshold grows to at most 32 MiB on 64-bit), so a
# pass's activations can be page-faulted anew on every pass: the shipped ResNet-18 took 14 ms per copy at 128
# copies per pass by default and 10.7 with the thresholds fixed (measured here, in fresh processes).
CPU_LARGEST_BLOCK = 32 * MIB
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
NEVER_TRIM = 2**31 - 1  # the largest value mallopt takes (an int)
# The chunk sizes worth timing: the memory bound and its halvings down to a sixteenth of it. Per copy, a pass gets
# slower both as its activations outgrow the caches (the shipped ResNet-18: 10.1 ms at 32 copies, 11.7 at 128) and
# as it gets too small to fill the cores (EfficientNet-Lite0 at 224: 51 ms per copy at one copy per pass, 33 at
# six); a sixteenth keeps a measurement made under load from settling on a starved chunk.
CHUNK_HALVINGS = 4
# Each candidate is timed over passes covering at least the bound's copies (two passes at least), in this many
# rounds (largest first, then smallest first), keeping its best round: a burst of load in one round does not decide.
CHUNK_TIMING_ROUNDS = 2


def threads_per_process(processes: int) -> int:
    """Intra-op threads for each of `processes` processes sharing this machine's cores. More threads than cores in
    all made a convolution 8x slower on two cores (OpenMP's waiting threads spin)."""
    return max(1, (os.cpu_count() or 1) // processes)


def keep_freed_memory() -> bool:
    """Fix glibc's thresholds: blocks up to `CPU_LARGEST_BLOCK` come from memory malloc keeps, freed memory is not
    given back. The process then holds its peak heap (one chunk's activations: no larger blocks are kept), and
    passes stop page-faulting. Returns whether it applied (no-op off glibc, e.g. macOS)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, CPU_LARGEST_BLOCK) and libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))


def memory_budget_bytes(device: torch.device, budget_mib: float | None) -> int:
    """The bytes one step may hold in each of its backbone passes and in its random starts: `budget_mib`, or the
    device's default."""
    if budget_mib is not None:
        return int(budget_mib * MIB)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FREE_FRACTION)
    return CPU_MEMORY_BUDGET_MIB * MIB


def saved_activations(model: nn.Module, image: Tensor, copies: int) -> dict[int, int]:
    """Bytes of each storage autograd saves for the backward of `copies` copies of `image` (a [C,H,W] tensor),
    the model's own parameters and buffers left out."""
    own = {tensor.untyped_storage().data_ptr() for tensor in (*model.parameters(), *model.buffers())}
    storages: dict[int, int] = {}

    def keep(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own:
            storages[storage.data_ptr()] = storage.nbytes()
        # Not the tensor itself: an output its own node saves (a ReLU's) would hold that node, a cycle Python's
        # collector cannot see, and every measurement would leak its graph and its copies of the image.
        return tensor.detach()

    x = image.detach().unsqueeze(0).repeat(copies, *([1] * image.dim())).requires_grad_(True)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        model(x)
    return storages


def activation_bytes_per_copy(model: nn.Module, image: Tensor) -> tuple[int, int]:
    """What one more copy of `image` adds to a pass: all its saved activations, and its largest one. Measured on
    passes of two and one copies, so tensors saved once whatever the batch cancel out."""
    one, two = saved_activations(model, image, 1), saved_activations(model, image, 2)
    return max(sum(two.values()) - sum(one.values()), 1), max(max(two.values(), default=0) // 2, 1)


def copies_per_pass(model: nn.Module, image: Tensor, budget_mib: float | None) -> int:
    """How many image copies one forward+backward pass takes (at least one): as many as the memory budget holds,
    each copy's saved activations and the `STEP_TENSORS_PER_COPY` tensors of its own size a step holds besides (a
    photo at its own resolution dwarfs the activations of the model-sized input it is resized to), and on the CPU
    no more than keep every activation within the blocks malloc keeps (`CPU_LARGEST_BLOCK`). An accelerated
    backbone is measured in fp32 without compiling: an upper bound on what it saves."""
    plain = model.backbone if isinstance(model, AcceleratedBackbone) else model
    per_copy, largest = activation_bytes_per_copy(plain, image)
    copies = memory_budget_bytes(image.device, budget_mib) // (per_copy + STEP_TENSORS_PER_COPY * image.nbytes)
    if image.device.type == "cpu":
        copies = min(copies, CPU_LARGEST_BLOCK // largest)
    return max(1, copies)


def chunk_candidates(bound: int) -> list[int]:
    """The copies per pass timed for a memory bound of `bound` copies, largest first."""
    return sorted({max(1, bound >> halving) for halving in range(CHUNK_HALVINGS + 1)}, reverse=True)


def device_name(device: torch.device | None = None) -> str:
    """The GPU's name (the first visible one by default), or the CPU's model with the threads torch uses."""
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The CPU's model name where Linux tells it (`platform.processor()` there is only the machine type)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


# One forward+backward pass of a batch of copies through a model: what the defense's chunks run (its FGSM's input
# gradient), and so what chunk timing times.
BackbonePass = Callable[[nn.Module, Tensor], object]


def chunk_key(model: nn.Module, image: Tensor, bound: int) -> dict:
    """What decides which chunk is fastest: the backbone's architecture and speed options (its module tree, not its
    weights), the input's shape and dtype, the device, the thread count, torch, and the bound the candidates halve."""
    return {
        "backbone": getattr(model, "name", type(model).__name__),
        "architecture_sha256": digest({"modules": repr(model)}),
        "input_shape": list(image.shape),
        "dtype": str(image.dtype),
        "device": device_name(image.device),
        "torch": torch.__version__,
        "bound": bound,
    }


def time_chunks(model: nn.Module, image: Tensor, candidates: list[int], backbone_pass: BackbonePass) -> dict:
    """Seconds per copy of `backbone_pass` at each candidate chunk size, on copies of `image`: each candidate's
    best of `CHUNK_TIMING_ROUNDS` rounds, each round after one warm-up pass of that shape. Draws no random number,
    so a run that times chunks and one that reads the choice back protect with the same draws."""
    enough = max(candidates)
    best: dict[int, float] = {}
    for round_index in range(CHUNK_TIMING_ROUNDS):
        for copies in candidates if round_index % 2 == 0 else candidates[::-1]:
            batch = image.detach().unsqueeze(0).expand(copies, *image.shape).contiguous()
            if round_index == 0:
                backbone_pass(model, batch)
            passes = max(2, math.ceil(enough / copies))
            _, seconds = timed(
                batch, lambda batch=batch, passes=passes: [backbone_pass(model, batch) for _ in range(passes)]
            )
            best[copies] = min(best.get(copies, math.inf), seconds / (passes * copies))
    return best


def read_chunk_timings(path: Path) -> dict:
    """The kept chunk choices (empty if the file does not exist yet); a file that is not one is refused, naming it."""
    if not path.exists():
        return {}
    try:
        kept = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path} is not a chunk-timing file ({error}): delete it to time the chunks again, or set "
            f"speed.chunk_timings to another file (null: no timing)"
        ) from None
    if not isinstance(kept, dict) or not all(isinstance(entry, dict) for entry in kept.values()):
        raise ValueError(
            f"{path} is not a chunk-timing file (a JSON object of entries): delete it to time the chunks again"
        )
    return kept


def chunk_choice(
    model: nn.Module,
    image: Tensor,
    budget_mib: float | None,
    timings_file: Path,
    backbone_pass: BackbonePass,
    most_copies: int,
) -> dict:
    """The fastest copies per pass for `model` on inputs like `image`, under the memory bound and `most_copies` (no
    pass takes more than a step has): read from `timings_file`, or timed once (`time_chunks`) and kept there for
    every later run on this device. One process times a key while the others wait for it (a lock beside the file),
    so runs compared for exact equality (the protection cache, DDP ranks, per-sample randomness) pass the same
    chunks. Returns the kept entry: the key, each candidate's seconds per copy and `copies_per_pass`."""
    bound = min(copies_per_pass(model, image, budget_mib), most_copies)
    key = chunk_key(model, image, bound)
    name = digest(key)
    with exclusive_lock(timings_file.with_name(timings_file.name + ".lock"), "timing the backbone's chunk sizes"):
        kept = read_chunk_timings(timings_file)
        if name not in kept:
            timing_model = model.uncompiled() if isinstance(model, AcceleratedBackbone) else model
            with torch.enable_grad():
                seconds = time_chunks(timing_model, image, chunk_candidates(bound), backbone_pass)
            kept[name] = {
                "key": key,
                "seconds_per_copy": {str(copies): value for copies, value in seconds.items()},
                "copies_per_pass": min(seconds, key=seconds.get),
                "timed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }
            write_json_atomically(kept, timings_file)
    return kept[name]


def timed(x: Tensor, work: Callable[[], Tensor]) -> tuple[Tensor, float]:
    """work()'s result and its wall-clock seconds, waiting for the GPU on both sides when `x` is on one."""
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    start = time.perf_counter()
    result = work()
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return result, time.perf_counter() - start


def chunks(total: int, size: int | None) -> list[slice]:
    """Consecutive slices of at most `size` (all at once when None) covering `total` items."""
    size = total if size is None else size
    return [slice(start, min(start + size, total)) for start in range(0, total, size)]


class AcceleratedBackbone(nn.Module):
    """The defense's view of its backbone: the same logits, optionally computed in bf16 autocast, on channels_last
    tensors, through torch.compile, or replayed as CUDA graphs (torch.compile's `reduce-overhead` mode, which needs
    static shapes: the chunked passes are, but for the last chunk of each batch).

    Logits come back as fp32, so the loss and the gradient w.r.t. the input stay fp32.
    """

    def __init__(
        self,
        backbone: nn.Module,
        bf16: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        cuda_graphs: bool = False,
    ) -> None:
        super().__init__()
        # channels_last converts weights in place: the defense gets its own copy, so a victim or classifier that
        # shares this instance keeps its layout.
        self.backbone = copy.deepcopy(backbone).to(memory_format=torch.channels_last) if channels_last else backbone
        self.bf16 = bf16
        self.channels_last = channels_last
        self.run = self.backbone
        if compile or cuda_graphs:
            self.run = torch.compile(self.backbone, mode="reduce-overhead" if cuda_graphs else "default")
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        self.name = getattr(backbone, "name", type(backbone).__name__)

    def extra_repr(self) -> str:
        return (
            f"bf16={self.bf16}, channels_last={self.channels_last}, "
            f"compile={self.compile}, cuda_graphs={self.cuda_graphs}"
        )

    def uncompiled(self) -> AcceleratedBackbone:
        """The same numerics without torch.compile (chunk timing runs it: compiling every candidate shape would
        cost more than the choice saves)."""
        if not (self.compile or self.cuda_graphs):
            return self
        return AcceleratedBackbone(self.backbone, bf16=self.bf16, channels_last=self.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast(x.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with autocast:
            logits = self.run(x)
        return logits.float()


def accelerate(backbone: nn.Module, settings: dict) -> nn.Module:
    """The backbone wrapped for the options `settings` turns on (the `speed` config node), or itself if none."""
    options = {key: bool(settings.get(key)) for key in ACCELERATIONS}
    return AcceleratedBackbone(backbone, **options) if any(options.values()) else backbone
