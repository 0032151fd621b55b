"""Fast Preemption's invariants, its purpose, its ablation knobs and the authors'-code preset."""

from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torch.profiler import ProfilerActivity

from preempt import speed
from preempt.assembly import bind
from preempt.defenses.fast_preemption import FastPreemption, step_order
from preempt.models import PixelClassifier
from preempt.parts import NoDefense
from preempt.randomness import per_sample_streams
from preempt.threat import distance


def tiny_backbone(channels: int = 3) -> PixelClassifier:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10))
    return PixelClassifier(network, name="tiny", input_shape=(channels, 8, 8))


def cross_entropy(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return F.cross_entropy(model(x), labels).item()


def assert_valid_protection(x: torch.Tensor, protected: torch.Tensor, eps: float, norm: str) -> None:
    assert protected.shape == x.shape
    assert protected.dtype == x.dtype
    assert protected.min() >= 0 and protected.max() <= 1
    assert (distance(protected, x, norm) <= eps + 1e-5).all()
    assert not protected.requires_grad


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_invariants_on_random_batch(norm: str) -> None:
    backbone = tiny_backbone()
    x = torch.rand(6, 3, 8, 8)
    labels = torch.randint(0, 10, (6,))
    eps = 8 / 255 if norm == "Linf" else 0.5
    protected = FastPreemption(backbone, eps=eps, norm=norm, n_samples=5)(x, labels)
    assert_valid_protection(x, protected, eps, norm)
    assert not torch.equal(protected, x)


def test_invariants_and_lower_loss_on_real_digits(digits_models, digits_batch) -> None:
    x, _ = digits_batch
    classifier, backbone = digits_models["digits_cnn"], digits_models["digits_cnn_at"]
    with torch.no_grad():
        labels = classifier(x).argmax(dim=1)
    protected = FastPreemption(backbone, eps=0.2)(x, labels)
    assert_valid_protection(x, protected, 0.2, "Linf")
    assert cross_entropy(backbone, protected, labels) < 0.5 * cross_entropy(backbone, x, labels)


def test_invariants_and_lower_loss_on_real_cifar10(resnet18, cifar_batch) -> None:
    x, _ = cifar_batch
    x = x[:8]
    with torch.no_grad():
        labels = resnet18(x).argmax(dim=1)
    protected = FastPreemption(resnet18, eps=8 / 255, n_samples=4)(x, labels)
    assert_valid_protection(x, protected, 8 / 255, "Linf")
    assert cross_entropy(resnet18, protected, labels) < cross_entropy(resnet18, x, labels)


def test_n_random_starts_are_one_batched_pass_per_step() -> None:
    """Within the memory budget every step is one pass of all N×B copies; the first call first measures one
    copy's activations (passes of 1 and 2 copies) to size the chunks."""
    backbone = tiny_backbone()
    batch_sizes: list[int] = []
    backbone.register_forward_hook(lambda module, inputs, output: batch_sizes.append(len(inputs[0])))
    x = torch.rand(3, 3, 8, 8)
    defense = FastPreemption(backbone, eps=0.03, forward_steps=2, backward_steps=3, n_samples=7)
    defense(x, torch.zeros(3).long())
    defense(x, torch.zeros(3).long())
    assert batch_sizes == [1, 2] + [3 * 7] * 5 * 2


def test_copies_per_pass_chunks_every_step() -> None:
    backbone = tiny_backbone()
    batch_sizes: list[int] = []
    backbone.register_forward_hook(lambda module, inputs, output: batch_sizes.append(len(inputs[0])))
    FastPreemption(backbone, eps=0.03, n_samples=7, copies_per_pass=8)(torch.rand(3, 3, 8, 8), torch.zeros(3).long())
    assert batch_sizes == [8, 8, 5] * 3


def test_steps_follow_algorithm_1_directions() -> None:
    """Forward steps alone lower the backbone's loss; backward steps alone raise the FGSM loss they reverse."""
    backbone = tiny_backbone()
    x = torch.rand(32, 3, 8, 8)
    labels = torch.randint(0, 10, (32,))
    forward_only = FastPreemption(backbone, eps=0.1, forward_steps=3, backward_steps=0)(x, labels)
    assert cross_entropy(backbone, forward_only, labels) < cross_entropy(backbone, x, labels)
    torch.manual_seed(1)
    reversed_attack = FastPreemption(backbone, eps=0.1, forward_steps=0, backward_steps=3)(x, labels)
    assert cross_entropy(backbone, reversed_attack, labels) < cross_entropy(backbone, x, labels)


def test_same_seed_same_protection() -> None:
    backbone = tiny_backbone()
    x, labels = torch.rand(4, 3, 8, 8), torch.arange(4)
    defense = FastPreemption(backbone, eps=0.05, n_samples=3)
    torch.manual_seed(7)
    first = defense(x, labels)
    torch.manual_seed(7)
    assert torch.equal(first, defense(x, labels))


def test_no_defense_is_identity() -> None:
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(NoDefense()(x, torch.zeros(2).long()), x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eps": 8.0}, "8/255"),
        ({"eps": 0.03, "forward_steps": 0, "backward_steps": 0}, "at least"),
        ({"eps": 0.03, "n_samples": 0}, "n_samples"),
        ({"eps": 0.03, "eta": 0}, "eta"),
    ],
)
def test_bad_settings_fail_with_the_fix(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FastPreemption(tiny_backbone(), **kwargs)


def protected_by(seed: int, **settings) -> torch.Tensor:
    """Fast Preemption with `settings` (eps 0.05, N 3 unless given) on a fixed random batch, torch seeded first."""
    generator = torch.Generator().manual_seed(0)
    x, labels = torch.rand(4, 3, 8, 8, generator=generator), torch.randint(0, 10, (4,), generator=generator)
    torch.manual_seed(seed)
    return FastPreemption(tiny_backbone(), **{"eps": 0.05, "n_samples": 3, **settings})(x, labels)


def test_pgd_with_one_iteration_is_fgsm() -> None:
    assert torch.equal(protected_by(3, optimizer="fgsm"), protected_by(3, optimizer="pgd", iterations=1))


def test_pgd_runs_its_iterations_in_one_batched_pass_each() -> None:
    backbone = tiny_backbone()
    batch_sizes: list[int] = []
    backbone.register_forward_hook(lambda module, inputs, output: batch_sizes.append(len(inputs[0])))
    x = torch.rand(3, 3, 8, 8)
    defense = FastPreemption(
        backbone, eps=0.03, forward_steps=1, backward_steps=2, n_samples=5, optimizer="pgd", copies_per_pass=15
    )
    assert defense.iterations == 10 and defense.step_size == pytest.approx(0.25 * 0.03)
    defense(x, torch.zeros(3).long())
    assert batch_sizes == [3 * 5] * (3 * 10)


def test_pgd_inner_optimizer_lowers_the_loss_further_than_fgsm_per_step() -> None:
    """Eq. 12: I PGD steps find a better inner example than one FGSM step, so one forward step gains more."""
    backbone = tiny_backbone()
    x, labels = torch.rand(32, 3, 8, 8), torch.randint(0, 10, (32,))
    losses = {}
    for optimizer in ("fgsm", "pgd"):
        torch.manual_seed(0)
        defense = FastPreemption(backbone, eps=0.05, eta=1.0, forward_steps=1, backward_steps=0, optimizer=optimizer)
        losses[optimizer] = cross_entropy(backbone, defense(x, labels), labels)
    assert losses["pgd"] < losses["fgsm"] < cross_entropy(backbone, x, labels)


def test_step_order_cascades_or_alternates() -> None:
    forward, backward = True, False
    assert step_order(2, 3, "cascade") == [forward] * 2 + [backward] * 3
    assert step_order(2, 3, "alternate") == [forward, backward, forward, backward, backward]
    assert step_order(3, 1, "alternate") == [forward, backward, forward, forward]


@pytest.mark.parametrize(("forward_steps", "backward_steps"), [(0, 3), (3, 0)])
def test_alternate_equals_cascade_when_one_direction_is_empty(forward_steps: int, backward_steps: int) -> None:
    steps = {"forward_steps": forward_steps, "backward_steps": backward_steps}
    assert torch.equal(protected_by(5, schedule="cascade", **steps), protected_by(5, schedule="alternate", **steps))


def test_alternate_differs_from_cascade_when_both_directions_run() -> None:
    steps = {"forward_steps": 2, "backward_steps": 2}
    assert not torch.equal(protected_by(5, schedule="cascade", **steps), protected_by(5, schedule="alternate", **steps))


def test_fgsm_refuses_pgd_settings_with_the_fix() -> None:
    with pytest.raises(ValueError, match="set optimizer=pgd"):
        FastPreemption(None, eps=0.03, iterations=5)
    with pytest.raises(ValueError, match="set optimizer=pgd"):
        FastPreemption(None, eps=0.03, step_size=0.01)


def reference_rule(
    x: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    eta: float,
    noise: list[torch.Tensor],
) -> torch.Tensor:
    """The authors' MSPD.py rule, by hand on a linear model (CE gradient (softmax − onehot)·W), one forward step
    (descend) then one backward step (ascend, then step away), N examples per step from the given noise."""
    n = len(noise[0]) // len(x)

    def sign_gradient(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        probabilities = torch.softmax(z.flatten(1) @ weight.T + bias, dim=1)
        return ((probabilities - F.one_hot(y, 10).to(z.dtype)) @ weight).view_as(z).sign()

    def smoothed(c: torch.Tensor, u: torch.Tensor, ascend: bool) -> torch.Tensor:
        centre = c.repeat_interleave(n, dim=0)
        starts = (centre + u).clamp(0, 1)
        stepped = starts + (eps if ascend else -eps) * sign_gradient(starts, labels.repeat_interleave(n))
        examples = (centre + (stepped - centre).clamp(-eps, eps)).clamp(0, 1)
        return examples.view(len(x), n, *x.shape[1:]).mean(dim=1)

    def onto_ball_around_x(z: torch.Tensor) -> torch.Tensor:
        return (x + (z - x).clamp(-eps, eps)).clamp(0, 1)

    x_forward = onto_ball_around_x(x + eta * (smoothed(x, noise[0], ascend=False) - x))
    return onto_ball_around_x(x_forward - eta * (smoothed(x_forward, noise[1], ascend=True) - x_forward))


def test_mspd_preset_matches_the_reference_rule_by_hand(compose_config) -> None:
    cfg = compose_config("defense=fast_preemption_mspd", "defense.n_samples=3", "threat.eps=0.1")
    torch.manual_seed(0)
    linear = nn.Linear(3 * 8 * 8, 10).double()
    backbone = nn.Sequential(nn.Flatten(), linear).requires_grad_(False)
    defense = bind(instantiate(cfg.defense), {"backbone": backbone})
    assert (defense.eta, defense.forward_steps, defense.backward_steps) == (1.0, 1, 1)
    x, labels = torch.rand(4, 3, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,))
    torch.manual_seed(11)
    protected = defense(x, labels)
    torch.manual_seed(11)  # the defense draws each step's N×B uniform starts in this order
    noise = [(torch.rand(12, 3, 8, 8, dtype=torch.float64) * 2 - 1) * 0.1 for _ in range(2)]
    expected = reference_rule(x, labels, linear.weight, linear.bias, 0.1, 1.0, noise)
    torch.testing.assert_close(protected, expected)
    paper = bind(
        instantiate(compose_config("defense=fast_preemption", "threat.eps=0.1").defense), {"backbone": backbone}
    )
    torch.manual_seed(11)
    assert not torch.allclose(paper(x, labels), protected)


@pytest.mark.parametrize("copies_per_pass", [1, 7, 64])
def test_chunked_passes_give_the_unchunked_protection_on_digits(
    copies_per_pass: int, digits_models, digits_batch
) -> None:
    """Chunking changes how many copies each backbone pass takes, never the random starts (drawn for the whole
    batch first): on the digits CNN the protected images are bit-identical."""
    x, labels = digits_batch[0][:16], digits_batch[1][:16]
    backbone = digits_models["digits_cnn_at"]

    def protect(**chunking) -> torch.Tensor:
        torch.manual_seed(0)
        return FastPreemption(backbone, eps=0.2, **chunking)(x, labels)

    assert torch.equal(protect(copies_per_pass=copies_per_pass), protect(copies_per_pass=len(x) * 20))


def test_chunked_passes_on_resnet18_differ_only_where_float_kernels_flip_a_sign(resnet18, cifar_batch) -> None:
    """oneDNN picks kernels by batch shape, so a chunk's gradients can differ from the whole batch's in the last
    bits; an FGSM sign then flips in a handful of near-zero-gradient pixels, moving that pixel's average by at most
    2·eps/N per step (η·3 steps in all)."""
    x, _ = cifar_batch
    x = x[:4]
    with torch.no_grad():
        labels = resnet18(x).argmax(dim=1)
    eps, n = 8 / 255, 10

    def protect(copies_per_pass: int) -> torch.Tensor:
        torch.manual_seed(0)
        return FastPreemption(resnet18, eps=eps, n_samples=n, copies_per_pass=copies_per_pass)(x, labels)

    whole, chunked = protect(4 * n), protect(7)
    differ = (whole - chunked).abs()
    assert (differ > 0).float().mean() < 1e-3
    assert differ.max() <= 3 * 0.7 * 2 * eps / n + 1e-6


def test_the_memory_budget_sets_copies_per_pass_once(digits_models, digits_batch) -> None:
    x, labels = digits_batch[0][:4], digits_batch[1][:4]
    defense = FastPreemption(digits_models["digits_cnn_at"], eps=0.2, memory_budget_mb=1)
    defense(x, labels)
    per_copy, _ = speed.activation_bytes_per_copy(digits_models["digits_cnn_at"], x[0])
    assert defense.copies_per_pass == 2**20 // (per_copy + speed.STEP_TENSORS_PER_COPY * x[0].nbytes)


def photo_backbone() -> nn.Module:
    """The tiny backbone on images of any size, resized to its 8×8 input as `preempt protect` does."""
    from preempt.protection.folder import AtModelResolution

    return AtModelResolution(tiny_backbone(), (8, 8))


def test_each_image_shape_gets_its_own_pass_size() -> None:
    """A pass sized on thumbnails would not fit a photo: a 64×64 batch after an 8×8 one takes fewer copies per pass,
    as many as the budget holds of its own step tensors (6 × 48 KiB per copy in 1 MiB: 3)."""
    backbone = photo_backbone()
    batch_sizes: list[int] = []
    backbone.register_forward_hook(lambda module, inputs, output: batch_sizes.append(len(inputs[0])))
    defense = FastPreemption(backbone, eps=0.03, n_samples=8, forward_steps=1, backward_steps=0, memory_budget_mb=1)
    defense(torch.rand(2, 3, 8, 8), torch.zeros(2).long())
    thumbnails = defense.copies_per_pass
    batch_sizes.clear()
    defense(torch.rand(1, 3, 64, 64), torch.zeros(1).long())
    assert thumbnails >= 16 and defense.copies_per_pass == 3
    assert batch_sizes[2:] == [3, 3, 2]  # after the two passes that measure a copy's activations


@pytest.mark.parametrize("randomness", ["per_batch", "per_sample"])
def test_starts_beyond_the_budget_are_drawn_in_rounds_of_the_same_starts(randomness: str) -> None:
    """When a batch's N×B starts outgrow the memory budget, each step draws them in rounds (here 2 of each photo's
    4) and adds up each photo's examples: no draw makes more than a round of starts. On the CPU with Linf, one photo
    (or per-sample streams, each photo's rows joined by a cat) draws the same starts as one round: the protection
    differs only where the other float order of the sum flips an FGSM sign (the bound of
    `test_chunked_passes_on_resnet18_...`)."""
    x = torch.rand(1 if randomness == "per_batch" else 2, 3, 32, 32)
    labels = torch.arange(len(x))
    eps, n = 0.05, 4

    def protect(**budget) -> tuple[torch.Tensor, list[int]]:
        defense = FastPreemption(photo_backbone(), eps=eps, n_samples=n, **budget)
        torch.manual_seed(3)
        streams = per_sample_streams(5, torch.arange(len(x))) if randomness == "per_sample" else nullcontext()
        with streams, torch.profiler.profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profile:
            protected = defense(x, labels)
        draws = [event.cpu_memory_usage for event in profile.events() if event.name in ("aten::rand", "aten::cat")]
        return protected, draws

    in_rounds, round_draws = protect(memory_budget_mb=2 * x.nbytes / 2**20)  # two starts of every photo
    whole, whole_draws = protect()
    assert max(round_draws) == 2 * x.nbytes < max(whole_draws) == 4 * x.nbytes
    differ = (in_rounds - whole).abs()
    assert (differ > 1e-5).float().mean() < 0.01
    assert differ.max() <= 3 * 0.7 * 2 * eps / n + 1e-6


def test_with_a_timings_file_the_defense_passes_the_fastest_chunk_and_keeps_it(
    digits_models, digits_batch, tmp_path
) -> None:
    """The chunk is timed on the first batch (the bound and its halvings) and read back by the next defense; the
    protection is the one its chunk size gives (on the digits CNN, the unchunked one)."""
    x, labels = digits_batch[0][:4], digits_batch[1][:4]
    backbone, timings = digits_models["digits_cnn_at"], tmp_path / "chunk_timings.json"

    def protect(**chunking) -> tuple[FastPreemption, torch.Tensor]:
        defense = FastPreemption(backbone, eps=0.2, **chunking)
        torch.manual_seed(0)
        return defense, defense(x, labels)

    timed, protected = protect(chunk_timings=str(timings))
    bound = min(speed.copies_per_pass(backbone, x[0], None), len(x) * 20)  # no more than a step's copies
    assert timed.copies_per_pass == timed.chunk_choice["copies_per_pass"] in speed.chunk_candidates(bound)
    assert torch.equal(protected, protect(copies_per_pass=len(x) * 20)[1])
    read_back, _ = protect(chunk_timings=str(timings))
    assert read_back.chunk_choice == timed.chunk_choice


def test_a_composed_run_keeps_its_chunk_timings_in_the_cache(compose_config, zoo_dir) -> None:
    cfg = compose_config()
    assert cfg.defense.chunk_timings == cfg.speed.chunk_timings == f"{zoo_dir}/chunk_timings.json"
    assert compose_config("speed.chunk_timings=null").defense.chunk_timings is None


@pytest.mark.parametrize(("images", "expected"), [(4, ["aten::index", "aten::rand"]), (1, ["aten::rand"])])
def test_a_step_makes_tensors_of_all_copies_only_for_its_draw(images: int, expected: list[str]) -> None:
    """A step allocates its N×B random starts, and for several images their repeated pixels to draw them around
    (freed after the draw); a single photo's copies are views of it. Every other operation runs per chunk. On
    224-px photos a tensor of all copies is hundreds of MiB, mapped fresh from the kernel each time it is made: when
    each operation of a step made one, EfficientNet-Lite0 ran at 1.43× its passes' floor."""
    backbone = tiny_backbone()
    x, labels = torch.rand(images, 3, 8, 8), torch.zeros(images).long()
    all_copies_bytes = images * 8 * x[0].numel() * x.element_size()
    defense = FastPreemption(backbone, eps=0.1, n_samples=8, copies_per_pass=2, forward_steps=1, backward_steps=1)
    with torch.profiler.profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profile:
        defense(x, labels)
    operations = [e.name for e in profile.events() if e.cpu_parent is None and e.cpu_memory_usage >= all_copies_bytes]
    assert sorted(operations) == sorted(expected * 2)  # two steps


def test_prepare_decides_the_chunk_for_batches_like_the_one_given(tmp_path) -> None:
    defense = FastPreemption(tiny_backbone(), eps=0.1, n_samples=5, chunk_timings=str(tmp_path / "t.json"))
    defense.prepare(torch.rand(3, 3, 8, 8))
    assert defense.chunk_choice["key"]["bound"] == 15  # the tiny backbone's bound exceeds a step's 3 × 5 copies
    assert defense.copies_per_pass == defense.chunk_choice["copies_per_pass"]


def eq8_to_12_by_hand(
    x: torch.Tensor,
    labels: torch.Tensor,
    linear: nn.Linear,
    eps: float,
    eta: float,
    step_size: float,
    iterations: int,
    directions: list[bool],
) -> torch.Tensor:
    """Eqs. 8–12 by hand on a linear model (CE gradient (softmax − onehot)·W): every step runs `iterations` sign
    steps from x_t itself (x_t,0 = x_t), descending when forward and ascending when backward, each onto the
    eps-ball around x and [0,1]; then x_t moves towards (forward, Eq. 11) or away from (backward, Eq. 9) the result
    by eta."""

    def sign_gradient(z: torch.Tensor) -> torch.Tensor:
        probabilities = torch.softmax(z.flatten(1) @ linear.weight.T + linear.bias, dim=1)
        return ((probabilities - F.one_hot(labels, 10).to(z.dtype)) @ linear.weight).view_as(z).sign()

    def onto_ball_around_x(z: torch.Tensor) -> torch.Tensor:
        return (x + (z - x).clamp(-eps, eps)).clamp(0, 1)

    x_t = x
    for forward in directions:
        inner = x_t
        for _ in range(iterations):
            inner = onto_ball_around_x(inner + (-step_size if forward else step_size) * sign_gradient(inner))
        x_t = onto_ball_around_x(x_t + (eta if forward else -eta) * (inner - x_t))
    return x_t


def test_bilevel_fp_runs_eq_8_from_x_t_whatever_the_seed(compose_config) -> None:
    """defense=bilevel_fp starts every step's PGD at x_t (Eq. 8), not at a random point: two seeds give the same
    images, and they are Eqs. 8–12 iterated by hand (one forward step added to test Eq. 10 too)."""
    cfg = compose_config(
        "defense=bilevel_fp", "threat.eps=0.1", "defense.forward_steps=1", "defense.backward_steps=2",
        "defense.iterations=3",
    )  # fmt: skip
    torch.manual_seed(0)
    linear = nn.Linear(3 * 8 * 8, 10).double()
    defense = bind(instantiate(cfg.defense), {"backbone": nn.Sequential(nn.Flatten(), linear).requires_grad_(False)})
    assert (defense.random_start, defense.n_samples, defense.eta, defense.step_size) == (False, 1, 0.1, 0.025)
    x, labels = torch.rand(4, 3, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,))
    torch.manual_seed(1)
    first = defense(x, labels)
    torch.manual_seed(2)
    assert torch.equal(first, defense(x, labels))
    expected = eq8_to_12_by_hand(x, labels, linear, 0.1, 0.1, 0.025, 3, [True, False, False])
    torch.testing.assert_close(first, expected)
    assert not torch.equal(first, x)


def test_random_start_false_refuses_n_identical_examples() -> None:
    with pytest.raises(ValueError, match=r"n_samples=20.*identical.*set n_samples=1"):
        FastPreemption(None, eps=0.03, random_start=False)
    assert FastPreemption(None, eps=0.03, random_start=False, n_samples=1).random_start is False


def test_snapshots_are_the_iterates_a_shorter_run_returns() -> None:
    """With record_every=2 over 5 steps the iterates after steps 2, 4 and 5 are kept; each is what a run of only
    that many steps returns from the same seed (the draws come in step order), and the last is the output."""
    backbone = tiny_backbone()
    x, labels = torch.rand(4, 3, 8, 8), torch.randint(0, 10, (4,))

    def run(forward_steps: int, backward_steps: int, **settings) -> tuple[FastPreemption, torch.Tensor]:
        defense = FastPreemption(
            backbone, eps=0.05, n_samples=3, forward_steps=forward_steps, backward_steps=backward_steps, **settings
        )
        torch.manual_seed(4)
        return defense, defense(x, labels)

    recording, protected = run(2, 3, record_every=2)
    assert recording.recorded_steps == (2, 4, 5)
    assert [step for step, _ in recording.snapshots] == [2, 4, 5]
    assert torch.equal(recording.snapshots[-1][1], protected)
    assert torch.equal(recording.snapshots[0][1], run(2, 0)[1])
    assert torch.equal(recording.snapshots[1][1], run(2, 2)[1])
    plain, unrecorded = run(2, 3)
    assert torch.equal(unrecorded, protected)  # keeping iterates changes nothing
    assert plain.recorded_steps == () and plain.snapshots == []
