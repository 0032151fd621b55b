"""The speed layer: chunk sizing from saved activations, the allocator setting, and the accelerated backbone's
numerics against fp32, and the fastest chunk timed once and kept."""

import concurrent.futures
import gc
import json
import time
import weakref

import pytest
import torch
from torch import nn

from preempt import speed
from preempt.models import PixelClassifier
from preempt.parts import ConfigError
from preempt.validation import validate_config


def conv_relu_linear() -> PixelClassifier:
    """Per copy, autograd saves the conv's 1×16×16 input (1,024 bytes, x requires grad) and the ReLU's 4×16×16
    output (4,096 bytes; Flatten is a view of it, so the Linear's saved input shares its storage)."""
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 256, 10))
    return PixelClassifier(network, name="conv_relu_linear", input_shape=(1, 16, 16))


@pytest.mark.parametrize(("total", "size"), [(10, 3), (10, 10), (10, 20), (1, 1), (7, None)])
def test_chunks_cover_every_item_once_in_order(total: int, size: int | None) -> None:
    parts = speed.chunks(total, size)
    covered = [i for part in parts for i in range(total)[part]]
    assert covered == list(range(total))
    assert all(part.stop - part.start <= (size or total) for part in parts)


def test_activation_bytes_per_copy_count_activations_not_weights() -> None:
    model = conv_relu_linear()
    assert speed.activation_bytes_per_copy(model, torch.rand(1, 16, 16)) == (1024 + 4096, 4096)


def test_measuring_activations_leaves_no_copy_alive() -> None:
    """Each measurement's graph and its copies of the image are freed (a pack hook returning the saved tensor
    itself leaked them: three photos' worth for every photo shape a folder holds)."""
    model = conv_relu_linear()
    inputs: list[weakref.ref] = []
    model.register_forward_pre_hook(lambda module, arguments: inputs.append(weakref.ref(arguments[0])))
    speed.activation_bytes_per_copy(model, torch.rand(1, 16, 16))
    gc.collect()
    assert len(inputs) == 2 and all(copies() is None for copies in inputs)


def test_copies_per_pass_fill_the_budget() -> None:
    """Each copy holds its activations (5,120 bytes) and a step's tensors of its own size (6 × 1,024 bytes)."""
    model = conv_relu_linear()
    per_copy = 5120 + speed.STEP_TENSORS_PER_COPY * 1024
    assert speed.copies_per_pass(model, torch.rand(1, 16, 16), budget_mib=1) == 2**20 // per_copy
    assert speed.copies_per_pass(model, torch.rand(1, 16, 16), budget_mib=0.001) == 1  # at least one copy


def test_a_photos_own_size_bounds_its_passes() -> None:
    """A 512×512 photo resized to the model's 16×16 saves the model's activations, but each copy of it in a pass
    holds a step's tensors of its own size (1 MiB each): a 16 MiB budget takes two copies, not three thousand."""
    from preempt.protection.folder import AtModelResolution

    photo_model = AtModelResolution(conv_relu_linear(), (16, 16))
    assert speed.copies_per_pass(photo_model, torch.rand(1, 512, 512), budget_mib=16) == 2  # 16 MiB ÷ (6 MiB + 5 KiB)


def test_on_the_cpu_no_activation_outgrows_mallocs_kept_blocks() -> None:
    """A large budget is capped so the largest activation (the ReLU's 4,096 bytes per copy) stays ≤ 32 MiB."""
    model = conv_relu_linear()
    assert speed.copies_per_pass(model, torch.rand(1, 16, 16), budget_mib=10_000) == 32 * 2**20 // 4096


def test_the_cpu_default_budget_is_the_documented_one() -> None:
    assert speed.memory_budget_bytes(torch.device("cpu"), None) == speed.CPU_MEMORY_BUDGET_MIB * 2**20
    assert speed.memory_budget_bytes(torch.device("cpu"), 3.5) == int(3.5 * 2**20)


def test_keep_freed_memory_applies_on_linux_glibc() -> None:
    assert speed.keep_freed_memory() is True


def test_no_option_leaves_the_backbone_itself() -> None:
    model = conv_relu_linear()
    assert speed.accelerate(model, {"bf16": False, "channels_last": False, "compile": False}) is model


@pytest.mark.parametrize("option", ["channels_last", "bf16"])
def test_accelerated_logits_are_fp32_and_close_to_fp32(option: str, resnet18, cifar_batch) -> None:
    """channels_last only reorders memory (float rounding apart); bf16 keeps 8 bits of mantissa, so logits move by
    a few hundredths and the top class stays."""
    x, _ = cifar_batch
    with torch.no_grad():
        reference = resnet18(x)
        logits = speed.accelerate(resnet18, {option: True})(x)
        assert torch.equal(resnet18(x), reference)  # the shared model itself is untouched
    assert logits.dtype == torch.float32
    tolerance = 1e-4 if option == "channels_last" else 0.25
    assert (logits - reference).abs().max() < tolerance
    assert torch.equal(logits.argmax(dim=1), reference.argmax(dim=1))


def test_cuda_graphs_without_a_gpu_are_refused_before_any_work(compose_config) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: CUDA graphs can run")
    with pytest.raises(ConfigError, match=r"speed\.cuda_graphs=false"):
        validate_config(compose_config("speed.cuda_graphs=true"))


def test_a_bad_speed_key_is_named(compose_config) -> None:
    with pytest.raises(ConfigError, match="memory_budget_mb"):
        validate_config(compose_config("speed.memory_budget_mb=-1"))


def protections(options: dict, digits_models, digits_batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32's and the option's protection of the same 64 digits with the same draws, and the sender's labels."""
    from preempt.defenses.fast_preemption import FastPreemption

    x, _ = digits_batch
    backbone = digits_models["digits_cnn_at"]
    with torch.no_grad():
        labels = digits_models["digits_cnn"](x).argmax(dim=1)
    protected = []
    for accelerated in ({}, options):
        torch.manual_seed(0)
        protected.append(FastPreemption(speed.accelerate(backbone, accelerated), eps=0.2)(x, labels))
    return *protected, labels


def levels_apart(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs() * 255


def test_channels_last_keeps_fp32s_protection(digits_models, digits_batch) -> None:
    """Different kernels, same maths: under 1% of pixels more than one 8-bit level from fp32's (a flipped sign
    where the gradient is near zero), every image still within the budget."""
    reference, protected, _ = protections({"channels_last": True}, digits_models, digits_batch)
    assert (levels_apart(protected, reference) > 1).float().mean() < 0.01
    assert ((protected - digits_batch[0]).abs().amax(dim=(1, 2, 3)) <= 0.2 + 1e-6).all()


@pytest.mark.slow
def test_compile_keeps_fp32s_protection(digits_batch) -> None:
    """torch.compile's generated kernels (a small network: compiling takes seconds on the CPU): as channels_last."""
    from preempt.defenses.fast_preemption import FastPreemption

    model, x = conv_relu_linear(), digits_batch[0][:16]
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    protected = []
    for backbone in (model, speed.accelerate(model, {"compile": True})):
        torch.manual_seed(0)
        protected.append(FastPreemption(backbone, eps=0.2, n_samples=4)(x, labels))
    assert (levels_apart(protected[1], protected[0]) > 1).float().mean() < 0.01


def test_bf16_moves_pixels_but_keeps_the_protections_effect(digits_models, digits_batch) -> None:
    """bf16 keeps 8 mantissa bits, so many near-zero gradient signs flip (measured: ~20% of pixels move, by less
    than one level on average); what the protection does is unchanged: the backbone's loss on the protected
    images within 5% of fp32's, and the victim's accuracy under PGD within two of the 64 images."""
    import torch.nn.functional as F

    from preempt.attacks.pgd import PGD

    reference, protected, labels = protections({"bf16": True}, digits_models, digits_batch)
    assert levels_apart(protected, reference).mean() < 2
    backbone, victim = digits_models["digits_cnn_at"], digits_models["digits_lenet_at"]
    with torch.no_grad():
        losses = [F.cross_entropy(backbone(images), labels).item() for images in (reference, protected)]
    assert losses[1] == pytest.approx(losses[0], rel=0.05)
    y = digits_batch[1]
    robust = []
    for images in (reference, protected):
        torch.manual_seed(1)
        attacked = PGD(victim, 0.2, "Linf", steps=10)(images, y)
        with torch.no_grad():
            robust.append((victim(attacked).argmax(dim=1) == y).float().mean().item())
    assert abs(robust[1] - robust[0]) * len(y) <= 2 + 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (CI has none)")
def test_cuda_graphs_keep_fp32s_protection(digits_models, digits_batch) -> None:
    import copy

    gpu_models = {name: copy.deepcopy(model).cuda() for name, model in digits_models.items()}
    batch = tuple(tensor.cuda() for tensor in digits_batch)
    reference, protected, _ = protections({"cuda_graphs": True}, gpu_models, batch)
    assert (levels_apart(protected, reference) > 1).float().mean() < 0.01


def test_processes_sharing_the_cores_get_their_share_of_threads_and_at_least_one(monkeypatch) -> None:
    from preempt.speed import threads_per_process

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert [threads_per_process(n) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert threads_per_process(2) == 1


# Chunk timing: a fake backbone pass whose cost per copy is set by the chunk size, so the fastest is known.
CHUNK_COST = {16: 0.002, 8: 0.001, 4: 0.0015, 2: 0.003, 1: 0.004}  # seconds per copy
# A budget (MiB) of 16 copies of conv_relu_linear's 5,120 saved bytes and a step's tensors of 1,024 bytes.
BOUND_16 = 16 * (5120 + speed.STEP_TENSORS_PER_COPY * 1024) / 2**20


def sleeping_pass(calls: list[int]):
    def backbone_pass(model: torch.nn.Module, copies: torch.Tensor) -> None:
        calls.append(len(copies))
        time.sleep(CHUNK_COST.get(len(copies), 0.0001) * len(copies))

    return backbone_pass


def failing_pass(model: torch.nn.Module, copies: torch.Tensor) -> None:
    raise AssertionError("the kept choice should have been read, not timed again")


@pytest.mark.parametrize(
    ("bound", "candidates"), [(128, [128, 64, 32, 16, 8]), (6, [6, 3, 1]), (1, [1]), (20, [20, 10, 5, 2, 1])]
)
def test_the_bound_and_its_halvings_down_to_a_sixteenth_are_timed(bound: int, candidates: list[int]) -> None:
    assert speed.chunk_candidates(bound) == candidates


def test_the_fastest_chunk_is_timed_once_kept_and_read_back(tmp_path) -> None:
    model, image, timings = conv_relu_linear(), torch.rand(1, 16, 16), tmp_path / "chunks.json"
    calls: list[int] = []
    rng = torch.get_rng_state()
    choice = speed.chunk_choice(model, image, BOUND_16, timings, sleeping_pass(calls), 10_000)
    assert torch.equal(torch.get_rng_state(), rng)  # no draw: timed and read-back runs protect with the same draws
    assert choice["copies_per_pass"] == 8
    assert sorted(map(int, choice["seconds_per_copy"])) == [1, 2, 4, 8, 16] and set(calls) == {1, 2, 4, 8, 16}
    assert choice["key"]["bound"] == 16 and choice["key"]["input_shape"] == [1, 16, 16]
    assert speed.chunk_choice(model, image, BOUND_16, timings, failing_pass, 10_000) == choice
    assert list(json.loads(timings.read_text()).values()) == [choice]


def test_no_candidate_exceeds_the_copies_a_step_has(tmp_path) -> None:
    """A frozen linear backbone saves nothing for its input gradient, so its memory bound is 32 Mi copies: the
    copies of one step (N × batch) bound the candidates instead."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 10)).requires_grad_(False)
    calls: list[int] = []
    choice = speed.chunk_choice(model, torch.rand(1, 16, 16), None, tmp_path / "t.json", sleeping_pass(calls), 6)
    assert choice["key"]["bound"] == 6 and set(calls) == {6, 3, 1}


def test_another_input_shape_or_thread_count_is_timed_apart_and_both_are_kept(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    timings = tmp_path / "chunks.json"
    speed.chunk_choice(model, torch.rand(1, 16, 16), BOUND_16, timings, sleeping_pass([]), 64)
    calls: list[int] = []
    speed.chunk_choice(model, torch.rand(1, 8, 8), BOUND_16, timings, sleeping_pass(calls), 64)
    assert calls
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        calls.clear()
        speed.chunk_choice(model, torch.rand(1, 16, 16), BOUND_16, timings, sleeping_pass(calls), 64)
        assert calls
    finally:
        torch.set_num_threads(threads)
    assert len(json.loads(timings.read_text())) == 3


def test_processes_asking_at_once_time_the_chunks_once(tmp_path) -> None:
    """The lock beside the file: the second asker waits and reads the first's choice (threads stand in for the
    processes; flock locks open files, so they exclude each other the same way)."""
    model, image, timings = conv_relu_linear(), torch.rand(1, 16, 16), tmp_path / "chunks.json"
    calls: list[int] = []
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        asked = [
            pool.submit(speed.chunk_choice, model, image, BOUND_16, timings, sleeping_pass(calls), 10_000) for _ in "ab"
        ]
        choices = [future.result() for future in asked]
    assert choices[0] == choices[1]
    assert len(calls) == 5 + 2 * sum(max(2, 16 // copies) for copies in (16, 8, 4, 2, 1))  # one timing: 5 warm-ups


def test_a_file_that_is_not_a_timing_file_is_refused_naming_it(tmp_path) -> None:
    timings = tmp_path / "chunks.json"
    for text in ("{not json", "[1, 2]", '{"a": 3}'):
        timings.write_text(text)
        with pytest.raises(ValueError, match=f"{timings}.*delete it"):
            speed.chunk_choice(conv_relu_linear(), torch.rand(1, 16, 16), BOUND_16, timings, failing_pass, 10_000)


def test_a_compiled_backbone_is_timed_uncompiled_and_keyed_with_its_options(tmp_path) -> None:
    model = conv_relu_linear()
    compiled = speed.accelerate(model, {"compile": True})
    timed_models: list[torch.nn.Module] = []

    def recording_pass(timed_model: torch.nn.Module, copies: torch.Tensor) -> None:
        timed_models.append(timed_model)

    choice = speed.chunk_choice(compiled, torch.rand(1, 16, 16), BOUND_16, tmp_path / "t.json", recording_pass, 10_000)
    assert all(not (m.compile or m.cuda_graphs) and m.run is m.backbone for m in timed_models)
    plain = speed.chunk_choice(model, torch.rand(1, 16, 16), BOUND_16, tmp_path / "t.json", recording_pass, 10_000)
    assert choice["key"]["architecture_sha256"] != plain["key"]["architecture_sha256"]


def test_the_device_is_named_with_the_cpu_model_and_threads() -> None:
    name = speed.device_name(torch.device("cpu"))
    assert name == f"cpu ({speed.cpu_model()}, {torch.get_num_threads()} threads)"
    assert speed.cpu_model()
