"""`make bench` / `python -m preempt.commands.bench [overrides]`: how fast Fast Preemption protects, in one process.

On the present device, with the configured backbone, images and budget (conf/bench.yaml):
- the floor: the backbone's forward+backward passes alone, per copy, for each chunk size (copies per pass); the
  floor of a batch is the defense's pass count times the best per-copy time among chunks it could use;
- Fast Preemption as configured (its chunk timed once, or read back) at each batch size: seconds per image,
  images per second, the latency of one image, `overhead` = its time over the floor, `own_chunk_overhead` = its
  time over its own chunk's passes timed just before and after it (its own work, free of the machine's drift),
  and peak memory;
- time against N, each speed option (time, and how far its protected images are from fp32's), and Bi-Level and
  the paper's PGD variant as ratios to Fast Preemption on the same images and batch;
- the whole evaluation loop (label, protect, attack, score) per image by stage, through `commands.evaluate`.
It prints Markdown tables and writes bench.json, bench.md and bench.png into the run folder.
"""

from __future__ import annotations

import functools
import math
import resource
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor, nn

from preempt import speed
from preempt.assembly import Assembly, bind
from preempt.attacks.fgsm import loss_gradient
from preempt.commands.entry import hydra_command
from preempt.commands.evaluate import evaluate
from preempt.defenses.fast_preemption import FastPreemption
from preempt.files import write_json_atomically, write_text_atomically
from preempt.parts import Defense, assign_labels
from preempt.speed import device_name, timed
from preempt.validation import check_trusted_targets, validate_config

STAGES = ("label", "defense", "reversion", "attack", "score")


def timed_seconds(work: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of work(), waiting for the GPU on both sides when on one (the loop's `timed`)."""
    return timed(torch.empty(0, device=device), work)[1]


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float:
    """CUDA: the peak allocated since the last reset. CPU: the process's peak resident memory so far, the floor's
    largest chunks included (it never goes down; `activations_per_pass_mib` is the defense's own)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / speed.MIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def tiled(images: Tensor, count: int) -> Tensor:
    """`count` images: the dataset's, repeated in order (the benchmark needs batches larger than 20 samples)."""
    return images[torch.arange(count, device=images.device) % len(images)]


def passes_per_image(defense: FastPreemption) -> int:
    """Copies of one image that go through a forward+backward pass: N per inner iteration per step."""
    return defense.n_samples * defense.iterations * len(defense.directions)


def decide_chunk(defense: Defense, x: Tensor) -> int | None:
    """The defense prepared for batches like `x` before any timing (a chunk timing, once per backbone, options and
    shape, is not the defense's time); Fast Preemption's copies per pass for them."""
    defense.prepare(x)
    if isinstance(defense, FastPreemption):
        return min(defense.copies_per_pass, defense.n_samples * len(x))
    return None


class Bench:
    """The configured images, labels, backbone and defense factory on the present device."""

    def __init__(self, cfg: DictConfig, settings: DictConfig) -> None:
        self.cfg = cfg
        self.settings = settings
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dataset = instantiate(cfg.dataset)
        models = Assembly(cfg).models()
        for model in models.values():
            if isinstance(model, nn.Module):
                model.to(self.device).eval()
        self.backbone = models["backbone"]
        x = dataset.images.to(self.device)
        index = torch.arange(len(x), device=self.device)
        self.images = x
        self.labels = assign_labels(models["classifier"], x, dataset.labels.to(self.device), index, dataset.num_classes)
        self.dataset_name = getattr(dataset, "name", cfg.dataset._target_)
        self.defense_factory = instantiate(cfg.defense)
        self.eps = cfg.threat.eps

    def defense(self, factory: Callable[..., Defense] | None = None, options: dict | None = None, **settings):
        backbone = speed.accelerate(self.backbone, options or {})
        return bind(functools.partial(factory or self.defense_factory, **settings), {"backbone": backbone})

    def batch(self, size: int) -> tuple[Tensor, Tensor]:
        return tiled(self.images, size), tiled(self.labels, size)

    def time_defense(self, defense: Defense, batch_size: int, min_images: int, warm: bool = True) -> dict:
        """Seconds per image of `defense` on batches of `batch_size`, over enough calls to cover `min_images`
        images (a mean over seconds of work, as the floor's is: a best-of-many-short-calls would pick this shared
        machine's quiet moments and flatter the defense against the floor)."""
        x, labels = self.batch(batch_size)
        calls = max(1, math.ceil(min_images / batch_size))
        decide_chunk(defense, x)
        if warm:
            defense(x, labels)
        reset_peak_memory(self.device)
        torch.manual_seed(self.cfg.seed)
        with torch.enable_grad():
            seconds = timed_seconds(lambda: [defense(x, labels) for _ in range(calls)], self.device)
        per_image = seconds / (calls * batch_size)
        return {
            "batch_size": batch_size,
            "calls": calls,
            "seconds_per_image": per_image,
            "images_per_second": 1 / per_image,
            "peak_memory_mib": peak_memory_mib(self.device),
        }

    def floor_curve(self, chunk_sizes: list[int]) -> dict[int, float]:
        """Seconds per copy of a bare forward+backward at each chunk size (mean over `repeats`), on the images
        with uniform noise of the budget added, as the defense's copies are."""
        curve = {}
        for chunk in sorted(set(chunk_sizes)):
            count = max(chunk, self.settings.floor_copies)
            x, labels = self.batch(count)
            copies = (x + (torch.rand_like(x) * 2 - 1) * self.eps).clamp(0, 1)
            # The floor's work: the input gradients the defense's FGSM steps take, `chunk` copies per pass.
            work = functools.partial(loss_gradient, self.backbone, copies, labels, copies_per_pass=chunk)
            loss_gradient(self.backbone, copies[:chunk], labels[:chunk], copies_per_pass=chunk)  # warm-up: this shape
            repeats = self.settings.repeats
            curve[chunk] = sum(timed_seconds(work, self.device) for _ in range(repeats)) / (repeats * count)
        return curve


def floor_seconds_per_image(curve: dict[int, float], passes: int, copies: int) -> tuple[float, int]:
    """The floor of a batch with `copies` copies per step: `passes` copies per image at the best per-copy time of
    any chunk size it could use (no larger than its copies), and that chunk size."""
    usable = {chunk: seconds for chunk, seconds in curve.items() if chunk <= copies} or curve
    best = min(usable, key=usable.get)
    return passes * usable[best], best


def image_levels_apart(a: Tensor, b: Tensor) -> dict:
    """How far two protections of the same images are, in 8-bit levels: the largest difference and the fraction
    of pixels more than one level apart, and the mean."""
    levels = (a - b).abs() * 255
    return {
        "max_levels": float(levels.max()),
        "mean_levels": float(levels.mean()),
        "fraction_over_one_level": float((levels > 1).float().mean()),
    }


def run_benchmark(cfg: DictConfig, output_dir: Path) -> dict:
    """Every measurement of the module docstring; returns what bench.json holds."""
    settings = cfg.bench
    # The comparisons' defenses are built from bench.compare, which the run's validation does not see.
    check_trusted_targets(OmegaConf.to_container(settings.compare, resolve=True), "bench.compare")
    run_cfg = _without_bench(cfg)
    validate_config(run_cfg)
    if run_cfg.speed.keep_freed_memory:
        speed.keep_freed_memory()
    bench = Bench(run_cfg, settings)
    fast = bench.defense()
    if not isinstance(fast, FastPreemption):
        raise SystemExit(f"error: the benchmark times Fast Preemption; defense={run_cfg.defense._target_} is not it")
    passes = passes_per_image(fast)
    per_copy, _ = speed.activation_bytes_per_copy(bench.backbone, bench.images[0])
    n = fast.n_samples
    # The defense's own chunk at the run's batch size (timed once, or read back), whose candidates the floor times
    # too; a batch whose step has fewer copies than that bound decides its own.
    copies = fast.pass_size(bench.images[0], n * run_cfg.batch_size)
    chosen_among = [int(chunk) for chunk in (fast.chunk_choice or {}).get("seconds_per_copy", {})]
    steps_copies = [n * batch for batch in settings.batch_sizes]
    chunk_sizes = [*settings.chunk_sizes, copies, *chosen_among]
    curve = bench.floor_curve([*chunk_sizes, *(c for c in steps_copies if c <= max(chunk_sizes))])
    best_chunk = min(curve, key=curve.get)
    report: dict = {
        "device": device_name(bench.device),
        "torch": torch.__version__,
        "backbone": run_cfg.backbone._target_,
        "dataset": bench.dataset_name,
        "image_shape": list(bench.images.shape[1:]),
        "eps": bench.eps,
        "defense": OmegaConf.to_container(run_cfg.defense, resolve=True),
        "speed": OmegaConf.to_container(run_cfg.speed, resolve=True),
        "passes_per_image": passes,
        "floor_seconds_per_copy": {str(chunk): seconds for chunk, seconds in curve.items()},
        "best_chunk": best_chunk,
        "best_floor_seconds_per_image": passes * curve[best_chunk],
        "copies_per_pass": copies,
        "chunk_choice": fast.chunk_choice,
    }

    by_batch = []
    for batch_size in sorted(settings.batch_sizes):
        defense = bench.defense()
        own_chunk = decide_chunk(defense, bench.batch(batch_size)[0])
        # The passes alone at the defense's own chunk, timed just before and just after it: their mean is its floor
        # under the same machine load (this machine drifts by ±15% over minutes, more than the defense's own work).
        before = bench.floor_curve([own_chunk])[own_chunk]
        row = bench.time_defense(defense, batch_size, settings.min_images, warm=n * batch_size <= 2048)
        beside = passes * (before + bench.floor_curve([own_chunk])[own_chunk]) / 2
        floor, chunk = floor_seconds_per_image(curve, passes, n * batch_size)
        row.update(
            floor_seconds_per_image=floor,
            floor_chunk=chunk,
            overhead=row["seconds_per_image"] / floor,
            copies_per_pass=own_chunk,
            own_chunk_floor_seconds_per_image=beside,
            own_chunk_overhead=row["seconds_per_image"] / beside,
            activations_per_pass_mib=own_chunk * per_copy / speed.MIB,
        )
        by_batch.append(row)
        print(
            f"batch {batch_size}: {row['seconds_per_image']:.4f} s/img, overhead {row['overhead']:.3f} over the best "
            f"chunk's floor, {row['own_chunk_overhead']:.3f} over its own chunk's timed beside it",
            flush=True,
        )
    report["by_batch"] = by_batch
    report["latency_one_image_seconds"] = next((r["seconds_per_image"] for r in by_batch if r["batch_size"] == 1), None)
    default = next((r for r in by_batch if r["batch_size"] == run_cfg.batch_size), None)
    if default is not None:
        report["default_batch"] = {
            "batch_size": run_cfg.batch_size,
            "seconds_per_image": default["seconds_per_image"],
            "over_best_chunk_floor": default["seconds_per_image"] / report["best_floor_seconds_per_image"],
        }

    scaling = settings.scaling_batch
    report["by_n"] = [
        {"n_samples": samples, **bench.time_defense(bench.defense(n_samples=samples), scaling, settings.min_images)}
        for samples in settings.n_samples
    ]
    report["options"] = time_options(bench, list(settings.options), settings.options_batch, settings.min_images)
    report["comparisons"] = compare(bench, settings) if settings.compare_images else []
    report["loop"] = time_loop(run_cfg, settings.loop_images, output_dir) if settings.loop_images else None
    return report


def _without_bench(cfg: DictConfig) -> DictConfig:
    """The run config the benchmark's parts come from: the bench settings taken out."""
    plain = cfg.copy()
    with open_dict(plain):
        del plain["bench"]
    return plain


def protect_from_seed(bench: Bench, defense: Defense, x: Tensor, labels: Tensor) -> Tensor:
    """One protection of the batch from the run's seed: options are compared on the same draws."""
    torch.manual_seed(bench.cfg.seed)
    with torch.enable_grad():
        return defense(x, labels)


def backbone_loss(bench: Bench, images: Tensor, labels: Tensor) -> float:
    """The fp32 backbone's mean cross-entropy, in float64: on a protected image it is ~1e-9 for the CIFAR-10
    ResNet-18, which float32 rounds to 0."""
    with torch.no_grad():
        return float(F.cross_entropy(bench.backbone(images).double(), labels))


def time_option(bench: Bench, option: str, fp32: dict, reference: Tensor, x: Tensor, labels: Tensor) -> dict:
    """One speed option on the images and draws of the fp32 run (`fp32`, its row): time, first call (a compile), how
    far its protections are from fp32's, and its effect: how much it lowers the backbone's loss from the clean
    images', as a multiple of what fp32 lowers it by (`effect_vs_fp32`, 1: the same; the bf16 tests' tolerance is
    5%). The loss's own ratio is reported too, but near zero it measures rounding."""
    defense = bench.defense(options={option: True})
    decide_chunk(defense, x)
    first_call = timed_seconds(lambda: protect_from_seed(bench, defense, x, labels), bench.device)
    row = {"option": option, **bench.time_defense(defense, len(x), bench.settings.min_images, warm=False)}
    protected = protect_from_seed(bench, defense, x, labels)
    loss = backbone_loss(bench, protected, labels)
    lowered = fp32["backbone_loss_clean"] - fp32["backbone_loss"]
    row.update(
        image_levels_apart(protected, reference),
        first_call_seconds=first_call,
        backbone_loss=loss,
        backbone_loss_vs_fp32=loss / fp32["backbone_loss"] if fp32["backbone_loss"] > 0 else None,
        effect_vs_fp32=(fp32["backbone_loss_clean"] - loss) / lowered if lowered > 0 else None,
        speedup=fp32["seconds_per_image"] / row["seconds_per_image"],
    )
    return row


def time_options(bench: Bench, options: list[str], batch_size: int, min_images: int) -> list[dict]:
    """Each speed option alone against fp32 at one batch size (`time_option`); a compiled backbone's first call (the
    compile) is reported apart."""
    x, labels = bench.batch(batch_size)
    reference_defense = bench.defense()
    reference = protect_from_seed(bench, reference_defense, x, labels)
    rows = [
        {
            "option": "fp32",
            **bench.time_defense(reference_defense, batch_size, min_images, warm=False),
            "backbone_loss_clean": backbone_loss(bench, x, labels),
            "backbone_loss": backbone_loss(bench, reference, labels),
        }
    ]
    for option in options:
        row = time_option(bench, option, rows[0], reference, x, labels)
        rows.append(row)
        print(f"{option}: {row['seconds_per_image']:.4f} s/img, {row['speedup']:.2f}x", flush=True)
    return rows


def compare(bench: Bench, settings: DictConfig) -> list[dict]:
    """Fast Preemption and each comparison on the same `compare_images` images, as one batch."""
    size = settings.compare_images
    fast = bench.time_defense(bench.defense(), size, size, warm=False)
    rows = [{"defense": "fast_preemption", **fast, "ratio_to_fast_preemption": 1.0}]
    for name, node in settings.compare.items():
        row = bench.time_defense(bench.defense(instantiate(node)), size, size, warm=False)
        ratio = row["seconds_per_image"] / fast["seconds_per_image"]
        rows.append({"defense": name, **row, "ratio_to_fast_preemption": ratio})
        print(f"{name}: {row['seconds_per_image']:.3f} s/img, {rows[-1]['ratio_to_fast_preemption']:.1f}x", flush=True)
    return rows


def time_loop(run_cfg: DictConfig, images: int, output_dir: Path) -> dict:
    """The whole test loop through `commands.evaluate` on `images` images: seconds per image by stage."""
    loop_cfg = run_cfg.copy()
    with open_dict(loop_cfg):
        loop_cfg.dataset.n_samples = images
        loop_cfg.batch_size = min(run_cfg.batch_size, images)
        loop_cfg.paths.output_dir = str(output_dir / "loop")
        loop_cfg.trainer.enable_progress_bar = False
    results = evaluate(loop_cfg)
    metrics = results["metrics"]
    stages = {stage: metrics.get(f"test/{stage}_seconds_per_image") for stage in STAGES}
    stages = {stage: seconds for stage, seconds in stages.items() if seconds is not None}
    return {
        "images": images,
        "attack": run_cfg.attack._target_,
        "seconds_per_image": stages,
        "slowest_stage": max(stages, key=stages.get),
        "wall_seconds": results.get("wall_seconds"),
    }


def format_report(report: dict) -> str:
    """The Markdown tables bench.md holds and the command prints."""
    lines = [
        f"device: {report['device']}, torch {report['torch']}; backbone {report['backbone']} on {report['dataset']} "
        f"{'×'.join(map(str, report['image_shape']))}; {report['passes_per_image']} forward+backward copies per image",
        "",
        "| batch | s/img | img/s | best chunk's floor s/img (chunk) | overhead | copies/pass | its chunk's floor "
        "s/img, timed beside it | overhead at its chunk | activations/pass MiB | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["by_batch"]:
        lines.append(
            f"| {row['batch_size']} | {row['seconds_per_image']:.4f} | {row['images_per_second']:.1f} | "
            f"{row['floor_seconds_per_image']:.4f} ({row['floor_chunk']}) | {row['overhead']:.3f} | "
            f"{row['copies_per_pass']} | {row['own_chunk_floor_seconds_per_image']:.4f} | "
            f"{row['own_chunk_overhead']:.3f} | {row['activations_per_pass_mib']:.0f} | {row['peak_memory_mib']:.0f} |"
        )
    if report.get("default_batch"):
        default = report["default_batch"]
        lines += [
            "",
            f"default batch {default['batch_size']}: {default['seconds_per_image']:.4f} s/img, "
            f"{default['over_best_chunk_floor']:.3f}× the best chunk's floor "
            f"({report['best_floor_seconds_per_image']:.4f} s/img at {report['best_chunk']} copies per pass)",
        ]
    lines += ["", chunk_choice_line(report)]
    lines += ["", "| chunk (copies/pass) | floor ms/copy |", "|---|---|"]
    lines += [f"| {chunk} | {seconds * 1e3:.3f} |" for chunk, seconds in report["floor_seconds_per_copy"].items()]
    lines += ["", "| N | s/img | img/s |", "|---|---|---|"]
    lines += [
        f"| {row['n_samples']} | {row['seconds_per_image']:.4f} | {row['images_per_second']:.1f} |"
        for row in report["by_n"]
    ]
    fp32_options = report["options"][0]
    lines += [
        "",
        f"backbone loss: {fp32_options['backbone_loss_clean']:.4g} on the images, "
        f"{fp32_options['backbone_loss']:.4g} protected in fp32",
        "",
        "| option | s/img | speedup | max 8-bit levels from fp32 | pixels >1 level | backbone loss (× fp32's) | "
        "effect × fp32's | first call s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["options"]:
        ratio, effect = row.get("backbone_loss_vs_fp32", 1.0), row.get("effect_vs_fp32", 1.0)
        lines.append(
            f"| {row['option']} | {row['seconds_per_image']:.4f} | {row.get('speedup', 1.0):.2f} | "
            f"{row.get('max_levels', 0.0):.2f} | {row.get('fraction_over_one_level', 0.0):.2e} | "
            f"{row['backbone_loss']:.4g} ({'—' if ratio is None else f'{ratio:.3f}'}) | "
            f"{'—' if effect is None else f'{effect:.4f}'} | {row.get('first_call_seconds', float('nan')):.1f} |"
        )
    if report["comparisons"]:
        lines += ["", "| defense | s/img | × Fast Preemption |", "|---|---|---|"]
        lines += [
            f"| {r['defense']} | {r['seconds_per_image']:.4f} | {r['ratio_to_fast_preemption']:.1f} |"
            for r in report["comparisons"]
        ]
    if report["loop"]:
        loop = report["loop"]
        lines += ["", f"whole loop ({loop['images']} images, attack {loop['attack'].rsplit('.', 1)[-1]}):"]
        lines += ["", "| stage | s/img |", "|---|---|"]
        lines += [f"| {stage} | {seconds:.4f} |" for stage, seconds in loop["seconds_per_image"].items()]
        lines += ["", f"slowest stage: {loop['slowest_stage']}"]
    return "\n".join(lines)


def chunk_choice_line(report: dict) -> str:
    """How the defense's copies per pass were chosen: set, the memory bound, or timed (with each candidate's time)."""
    choice = report["chunk_choice"]
    if choice is None:
        return f"copies per pass: {report['copies_per_pass']} (set, or the memory bound untimed)"
    timed = ", ".join(f"{chunk}: {seconds * 1e3:.2f}" for chunk, seconds in choice["seconds_per_copy"].items())
    return (
        f"copies per pass: {choice['copies_per_pass']}, the fastest of the memory bound ({choice['key']['bound']}) "
        f"and its halvings, timed {choice['timed_at']} (ms per copy: {timed})"
    )


def plot(report: dict, out: Path) -> Path:
    """Seconds per image against batch size (defense and floor) and against N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_batch, by_n) = plt.subplots(1, 2, figsize=(9, 3.5))
    batches = [row["batch_size"] for row in report["by_batch"]]
    by_batch.plot(batches, [row["seconds_per_image"] for row in report["by_batch"]], "o-", label="Fast Preemption")
    by_batch.plot(batches, [row["floor_seconds_per_image"] for row in report["by_batch"]], "s--", label="floor")
    by_batch.set(xscale="log", xlabel="batch size", ylabel="seconds per image", title="time by batch size")
    by_batch.legend()
    samples = [row["n_samples"] for row in report["by_n"]]
    by_n.plot(samples, [row["seconds_per_image"] for row in report["by_n"]], "o-")
    by_n.set(xlabel="N (random starts per step)", ylabel="seconds per image", title="time by N")
    figure.suptitle(report["device"], fontsize=9)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def bench(cfg: DictConfig) -> dict:
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = run_benchmark(cfg, output_dir)
    table = format_report(report)
    write_json_atomically(report, output_dir / "bench.json")
    write_text_atomically(table + "\n", output_dir / "bench.md")
    plot(report, output_dir / "bench.png")
    print(f"\n{table}\n\nbenchmark: {output_dir / 'bench.json'}")
    return report


@hydra_command("bench")
def main(cfg: DictConfig) -> None:
    bench(cfg)


if __name__ == "__main__":
    main()
