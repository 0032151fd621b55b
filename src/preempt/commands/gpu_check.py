"""`make gpu-check` / `python -m preempt.commands.gpu_check [overrides]`: one prepared check for a GPU machine that is
lent rarely and for minutes (conf/gpu_check.yaml, docs/gpu.md), rehearsed on the CPU so its own code cannot fail there.

Four sections, each within its own time budget; a section's failure is recorded as its `error` and the others still
run, and the command exits 1 if any section failed or missed a tolerance:
- fast_preemption: the defense on the shipped CIFAR-10 ResNet-18 at a large batch, in fp32 and with each speed
  option: time, overhead over the same passes alone, peak memory, and whether each option keeps the protection's
  effect (the backbone's loss on its protected images) within the CPU tests' tolerance of fp32's;
- end_to_end: src/main.py on the GPU, and as DDP with two processes on the one GPU, each against the same run on CPU;
- networks: forward and input-gradient passes of every paper network at its presets' batch (what the cost model
  reads; an out-of-memory batch is recorded, not raised);
- protect: `preempt protect` on the shipped CIFAR-10 images, then `preempt verify`.
Without CUDA it says so in one line and exits 0 before building anything; `gpu_check.rehearse_on_cpu=true` runs
every section on the CPU at tiny sizes. Writes gpu_check.json and gpu_check.md into the run folder and, measured on
a GPU, into `gpu_check.out_dir`.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from hydra import compose
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor

from preempt.config import CONF_DIR, composer

ROOT = CONF_DIR.parent
MAIN_SCRIPT = ROOT / "src" / "main.py"
SKIPPED = "gpu-check: skipped: no CUDA device here (torch.cuda.is_available() is False); nothing was measured"
# DDP with two processes on one GPU: Lightning refuses devices=2 on one GPU and NCCL two ranks on one device, so
# each process is a "node" of one device that we start ourselves (LightningEnvironment reads the ranks from the
# environment) and the ranks talk over gloo.
DDP_OVERRIDES = (
    "+trainer.num_nodes=2",
    "+trainer.strategy._target_=lightning.pytorch.strategies.DDPStrategy",
    "+trainer.strategy.process_group_backend=gloo",
    "+trainer.strategy.cluster_environment._target_=lightning.fabric.plugins.environments.LightningEnvironment",
)


class SectionTimeout(BaseException):
    """A section's budget ran out (not an Exception, so no `except Exception` inside a section swallows it)."""


def skip_reason(settings: DictConfig) -> str | None:
    """The one line the command prints instead of measuring, or None when there is something to measure."""
    return None if settings.rehearse_on_cpu or torch.cuda.is_available() else SKIPPED


def one_line(error: BaseException) -> str:
    """An error as the JSON records it: its type and its first line (tracebacks stay in the log)."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise SectionTimeout in the main thread once `seconds` have passed (when the running call returns to Python;
    subprocesses get the time left as their own timeout)."""

    def expire(signum: int, frame: object) -> None:
        raise SectionTimeout(f"the section's budget of {seconds:g} s ran out")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Check:
    """The run's config, the settings in force (the rehearsal's merged in), the device and the section's deadline."""

    def __init__(self, cfg: DictConfig, output_dir: Path) -> None:
        self.cfg = cfg
        self.rehearsal = bool(cfg.gpu_check.rehearse_on_cpu)
        settings = OmegaConf.to_container(cfg.gpu_check, resolve=True)
        rehearsal = settings.pop("rehearsal")
        self.settings = OmegaConf.merge(settings, rehearsal if self.rehearsal else {})
        self.device = "cpu" if self.rehearsal else "cuda"
        self.output_dir = output_dir
        self.deadline = time.monotonic()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def run_config(self, settings: dict[str, Any]) -> DictConfig:
        """The run config the in-process sections build their parts from: gpu_check taken out, `settings` set."""
        run_cfg = self.cfg.copy()
        with open_dict(run_cfg):
            del run_cfg["gpu_check"]
            for key, value in settings.items():
                OmegaConf.update(run_cfg, key, value)
        return run_cfg

    def environment(self, **variables: str) -> dict[str, str]:
        """A child process's environment: a rehearsal's children see no GPU either."""
        hidden = {"CUDA_VISIBLE_DEVICES": ""} if self.rehearsal else {}
        return {**os.environ, **hidden, **variables}


def free_device_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def time_fast_preemption(check: Check, record: dict) -> None:
    """Fast Preemption at `batch_size` in fp32 against the floor of its own passes (timed before and after it, as
    `make bench` does), then each speed option against fp32 on the same images and draws."""
    from preempt import speed
    from preempt.commands.bench import Bench, backbone_loss, decide_chunk, passes_per_image, protect_from_seed
    from preempt.validation import validate_config

    settings = check.settings
    batch = settings.batch_size
    run_cfg = check.run_config({"batch_size": batch, "defense.n_samples": settings.n_samples})
    validate_config(run_cfg)
    if run_cfg.speed.keep_freed_memory:
        speed.keep_freed_memory()
    bench = Bench(run_cfg, settings)
    x, labels = bench.batch(batch)
    defense = bench.defense()
    chunk = decide_chunk(defense, x)
    passes = passes_per_image(defense)
    reference = protect_from_seed(bench, defense, x, labels)  # also the warm-up of the timing below
    before = bench.floor_curve([chunk])[chunk]
    fp32 = bench.time_defense(defense, batch, settings.min_images, warm=False)
    floor = passes * (before + bench.floor_curve([chunk])[chunk]) / 2
    seconds = fp32["seconds_per_image"]
    record.update(
        backbone=run_cfg.backbone._target_,
        batch_size=batch,
        n_samples=settings.n_samples,
        passes_per_image=passes,
        copies_per_pass=chunk,
        seconds_per_image=seconds,
        images_per_second=1 / seconds,
        ms_per_image=seconds * 1e3,
        target_ms=settings.target_ms,
        times_target=seconds * 1e3 / settings.target_ms,
        paper_seconds=settings.paper_seconds,
        times_paper=seconds / settings.paper_seconds,
        floor_seconds_per_image=floor,
        overhead=seconds / floor,
        peak_memory_mib=fp32["peak_memory_mib"],
        backbone_loss_clean=backbone_loss(bench, x, labels),
        backbone_loss=backbone_loss(bench, reference, labels),
        loss_tolerance=settings.loss_tolerance,
        options=[],
    )
    print(f"gpu-check: fast_preemption fp32: {seconds * 1e3:.3f} ms/img, overhead {seconds / floor:.3f}", flush=True)
    for option in settings.options:
        try:
            row = time_option(bench, option, record, reference)
        except Exception as error:  # the other options still run
            row = {"option": option, "error": one_line(error)}
            record["checks"][f"{option} runs"] = False
        record["options"].append(row)
        if "within_tolerance" in row:
            record["checks"][f"{option} keeps the protection's effect"] = row["within_tolerance"]


def time_option(bench: Any, option: str, fp32: dict, reference: Tensor) -> dict:
    """`make bench`'s timing of one speed option against fp32 (`bench.time_option`), with the protection's effect
    checked against `loss_tolerance`; CUDA graphs only on CUDA."""
    from preempt.commands.bench import time_option as time_against_fp32

    if option == "cuda_graphs" and bench.device.type != "cuda":
        return {"option": option, "skipped": "CUDA only (torch.compile's reduce-overhead mode): not run on the CPU"}
    x, labels = bench.batch(fp32["batch_size"])
    row = time_against_fp32(bench, option, fp32, reference, x, labels)
    effect = row["effect_vs_fp32"]
    row.update(
        ms_per_image=row["seconds_per_image"] * 1e3,
        within_tolerance=effect is not None and abs(effect - 1) <= bench.settings.loss_tolerance,
    )
    print(f"gpu-check: fast_preemption {option}: {row['ms_per_image']:.3f} ms/img", flush=True)
    return row


def compare_end_to_end(check: Check, record: dict) -> None:
    """src/main.py on the CPU, on the device, and as DDP with two processes on the device, all four processes at
    once (each with a quarter of the cores); the device's runs must give the CPU's test metrics within the
    tolerances of conf/gpu_check.yaml."""
    settings = check.settings.end_to_end
    folder = check.output_dir / "end_to_end"
    folder.mkdir(parents=True, exist_ok=True)
    trainer = "trainer=cpu" if check.rehearsal else "trainer=gpu"
    common = [
        *settings.overrides,
        f"paths.cache_dir={check.cfg.paths.cache_dir}",
        "logger=none",
        "print_config=false",
        "trainer.enable_progress_bar=false",
    ]
    threads = str(max(1, (os.cpu_count() or 4) // 4))
    launches = {
        "cpu": (folder / "cpu", ["trainer=cpu", *common], check.environment(OMP_NUM_THREADS=threads)),
        "device": (folder / "device", [trainer, *common], check.environment(OMP_NUM_THREADS=threads)),
    }
    port = free_port()
    for rank in (0, 1):
        # Rank 1 shares the run folder: its Hydra config and log are its own, as with Lightning's own launcher.
        own = [] if rank == 0 else ["hydra.output_subdir=.hydra_rank_1", "hydra.job.name=evaluate_rank_1"]
        environment = ddp_environment(check, rank, port, OMP_NUM_THREADS=threads)
        launches[f"ddp_rank_{rank}"] = (folder / "ddp", [trainer, *DDP_OVERRIDES, *own, *common], environment)
    processes = {}
    try:
        for name, (run, overrides, environment) in launches.items():
            with open(folder / f"{name}.log", "w") as log:
                command = [sys.executable, str(MAIN_SCRIPT), f"hydra.run.dir={run}", *overrides]
                processes[name] = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=environment
                )
        for process in processes.values():
            process.wait(timeout=max(check.remaining(), 1))
    finally:  # a run that outlasts the section, or the others when one fails to start, is stopped
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    record["runs"] = {name: {"returncode": process.returncode} for name, process in processes.items()}
    for rank in (0, 1):
        # Lightning's line when a rank has joined the process group.
        joined = f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in (folder / f"ddp_rank_{rank}.log").read_text()
        record["runs"][f"ddp_rank_{rank}"]["joined"] = joined
    record["checks"]["each run exits 0"] = all(process.returncode == 0 for process in processes.values())
    record["checks"]["both DDP processes joined"] = all(record["runs"][f"ddp_rank_{rank}"]["joined"] for rank in (0, 1))
    results = {name: read_results(folder / name) for name in ("cpu", "device", "ddp")}
    record["comparisons"] = {}
    for name, (one, other) in {"device_vs_cpu": ("device", "cpu"), "ddp_vs_cpu": ("ddp", "cpu")}.items():
        if results[one] is None or results[other] is None:
            record["checks"][f"{name} within tolerance"] = False
            continue
        comparison = compare_metrics(results[one], results[other], settings)
        record["comparisons"][name] = comparison
        record["checks"][f"{name} within tolerance"] = comparison["within_tolerance"]


def free_port() -> int:
    """A port free now, for the DDP ranks to meet on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ddp_environment(check: Check, rank: int, port: int, **variables: str) -> dict[str, str]:
    """One DDP process's environment (see DDP_OVERRIDES): its rank and where the ranks meet."""
    return check.environment(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", NODE_RANK=str(rank), LOCAL_RANK="0", **variables
    )


def read_results(folder: Path) -> dict | None:
    path = folder / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def compare_metrics(results: dict, reference: dict, settings: DictConfig) -> dict:
    """Each test metric of `results` against `reference`'s: accuracies and rates within `acc_tolerance_images`
    images, the sanity counts equal, the other measures within `float_tolerance`; times are not compared."""
    images = reference["run"]["n_samples"]
    metrics, outside = {}, []
    for key, expected in reference["metrics"].items():
        if key.endswith("_seconds_per_image"):
            continue
        if key.endswith(("_acc", "_rate")):
            limit = settings.acc_tolerance_images / images
        elif key.startswith("test/check_"):
            limit = 0.0
        else:
            limit = settings.float_tolerance
        value = results["metrics"].get(key)
        metrics[key] = {"value": value, "reference": expected, "limit": limit}
        if value is None or abs(value - expected) > limit + 1e-12:
            outside.append(key)
    return {"n_samples": images, "within_tolerance": not outside, "outside": outside, "metrics": metrics}


def time_networks(check: Check, record: dict) -> None:
    """`time_passes` for each paper network (a network that errors is recorded and the next one runs; one not
    reached in the budget is recorded as such)."""
    from preempt.models.paper_networks import PAPER_NETWORKS, time_passes

    settings = check.settings.networks
    record["networks"] = measured = {}
    record["left_out"] = {}
    for key, network in PAPER_NETWORKS.items():
        batch = settings.batch_size or network.batch_size
        if settings.max_parameters_m is not None and network.parameters_m >= settings.max_parameters_m:
            record["left_out"][key] = (
                f"{network.parameters_m} M parameters (max_parameters_m={settings.max_parameters_m})"
            )
            continue
        unmeasured = {"key": key, "batch_size": batch, "forward_backward_s_per_img": None, "forward_s_per_img": None}
        if check.remaining() <= 0:
            measured[key] = {**unmeasured, "error": "not run: the section's budget was spent"}
            continue
        try:
            measured[key] = time_passes(network, check.device, batch_size=batch, repeats=settings.repeats)
        except Exception as error:
            measured[key] = {**unmeasured, "error": one_line(error)}
            record["checks"][f"{key} runs"] = False
        free_device_memory()
        timing = measured[key]
        print(f"gpu-check: networks {key}: {timing['forward_backward_s_per_img']} s/img, {timing['error']}", flush=True)


def protect_samples(check: Check, record: dict) -> None:
    """`preempt protect` of the shipped CIFAR-10 images on the device, then `preempt verify` of what it wrote."""
    from preempt.datasets.package_samples import export_samples
    from preempt.protection.manifest_lines import read_lines

    settings = check.settings.protect
    folder = check.output_dir / "protect"
    inputs, outputs = folder / "samples", folder / "protected"
    files = export_samples("cifar10", inputs)
    for extra in files[settings.images or len(files) :]:
        extra.unlink()
    count = min(len(files), settings.images or len(files))
    command = [
        *(sys.executable, "-m", "preempt.commands.protect", str(inputs), str(outputs), "--no-progress"),
        *(f"protect.device={check.device}", f"paths.cache_dir={check.cfg.paths.cache_dir}", *settings.overrides),
    ]
    started = time.monotonic()
    with open(folder / "protect.log", "w") as log:
        done = subprocess.run(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=check.environment(),
            timeout=max(check.remaining(), 1),
        )
    record.update(files=count, returncode=done.returncode, wall_seconds_with_startup=time.monotonic() - started)
    entries = [line.entry for line in read_lines(outputs).values()]
    protected = [entry for entry in entries if entry["status"] == "protected"]
    record["files_protected"] = len(protected)
    if protected:
        record["seconds_per_image"] = statistics.fmean(entry["seconds"] for entry in protected)
        record["protect_seconds_per_image"] = statistics.fmean(entry["protect_seconds"] for entry in protected)
    verified = subprocess.run(
        [sys.executable, "-m", "preempt.commands.verify", str(outputs)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=check.environment(),
        timeout=max(check.remaining(), 1),
    )
    record["verify_returncode"] = verified.returncode
    record["verify_summary"] = (verified.stdout.strip().splitlines() or [""])[-1]
    record["checks"].update(
        {
            "protect exits 0": done.returncode == 0,
            "every file protected": len(protected) == count,
            "verify exits 0": verified.returncode == 0,
        }
    )


SECTIONS: dict[str, Callable[[Check, dict], None]] = {
    "fast_preemption": time_fast_preemption,
    "end_to_end": compare_end_to_end,
    "networks": time_networks,
    "protect": protect_samples,
}


def run_section(check: Check, name: str) -> dict:
    """One section within its budget; its exception (or running out of time) is its `error`."""
    budget = float(check.settings.seconds[name])
    record: dict = {"budget_seconds": budget, "error": None, "checks": {}}
    started = time.monotonic()
    check.deadline = started + budget
    try:
        with time_limit(budget):
            SECTIONS[name](check, record)
    except (Exception, SystemExit, SectionTimeout) as error:
        record["error"] = one_line(error)
    record["wall_seconds"] = time.monotonic() - started
    record["passed"] = record["error"] is None and all(record["checks"].values())
    failed = [check_name for check_name, passed in record["checks"].items() if not passed]
    verdict = "passed" if record["passed"] else f"FAILED: {record['error'] or ', '.join(failed)}"
    print(f"gpu-check: {name}: {record['wall_seconds']:.1f} s, {verdict}", flush=True)
    free_device_memory()
    return record


def gpu_check(cfg: DictConfig) -> dict:
    """Every section; returns what gpu_check.json holds (or, with nothing to measure, the line it printed). The run
    folder's files are rewritten after each section, so a check stopped from outside keeps what it finished."""
    from preempt.speed import device_name

    reason = skip_reason(cfg.gpu_check)
    if reason is not None:
        print(reason)
        return {"skipped": reason}
    output_dir = Path(cfg.paths.output_dir)
    check = Check(cfg, output_dir)
    started = time.monotonic()
    report: dict = {
        "device": device_name(torch.device(check.device)),
        "rehearsal": check.rehearsal,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "passed": True,
        "wall_seconds": 0.0,
        "sections": {},
        "networks": {},
    }
    for name in check.settings.sections:
        section = report["sections"][name] = run_section(check, name)
        report["networks"].update(section.pop("networks", {}))
        report["passed"] = all(done["passed"] for done in report["sections"].values())
        report["wall_seconds"] = time.monotonic() - started
        write_report(report, [output_dir])
    # Only a GPU's measurement is the newest one for the cost model.
    folders = [output_dir] if check.rehearsal else [output_dir, Path(check.settings.out_dir)]
    write_report(report, folders)
    print(f"\n{format_report(report)}\n\ngpu check: {', '.join(str(folder / 'gpu_check.json') for folder in folders)}")
    return report


def write_report(report: dict, folders: list[Path]) -> None:
    from preempt.files import write_json_atomically, write_text_atomically

    table = format_report(report)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomically(report, folder / "gpu_check.json")
        write_text_atomically(table + "\n", folder / "gpu_check.md")


def number(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def format_report(report: dict) -> str:
    """gpu_check.md: the device and versions, each section's verdict and time, and a table per section."""
    sections = report["sections"]
    lines = [
        f"# GPU check{' (rehearsal on the CPU)' if report['rehearsal'] else ''}: {report['device']}",
        "",
        f"{report['date']}, torch {report['torch']}, CUDA {report['cuda']}; {report['wall_seconds']:.0f} s; "
        f"{'passed' if report['passed'] else 'FAILED'}",
        "",
        "| section | passed | wall s | budget s | error or failed checks |",
        "|---|---|---|---|---|",
    ]
    for name, section in sections.items():
        failed = ", ".join(check for check, passed in section["checks"].items() if not passed)
        lines.append(
            f"| {name} | {'yes' if section['passed'] else 'no'} | {section['wall_seconds']:.1f} | "
            f"{section['budget_seconds']:.0f} | {section['error'] or failed} |"
        )
    for name, render in (
        ("fast_preemption", fast_preemption_lines),
        ("end_to_end", end_to_end_lines),
        ("networks", lambda _: networks_lines(report["networks"])),
        ("protect", protect_lines),
    ):
        if name in sections:
            lines += ["", f"## {name}", "", *render(sections[name])]
    return "\n".join(lines)


def fast_preemption_lines(section: dict) -> list[str]:
    if "seconds_per_image" not in section:
        return ["not measured"]
    lines = [
        f"{section['backbone']}, batch {section['batch_size']}, N {section['n_samples']}, "
        f"{section['passes_per_image']} passes per image, {section['copies_per_pass']} copies per pass",
        "",
        f"| s/img | ms/img | img/s | × target ({section['target_ms']} ms) | × paper ({section['paper_seconds']} s, "
        "A100) | floor s/img | overhead | peak MiB |",
        "|---|---|---|---|---|---|---|---|",
        f"| {section['seconds_per_image']:.5f} | {section['ms_per_image']:.3f} | {section['images_per_second']:.0f} | "
        f"{section['times_target']:.2f} | {section['times_paper']:.3f} | {section['floor_seconds_per_image']:.5f} | "
        f"{section['overhead']:.3f} | {section['peak_memory_mib']:.0f} |",
        "",
        f"backbone loss {section['backbone_loss_clean']:.4g} on the images, {section['backbone_loss']:.4g} protected "
        f"in fp32; an option must lower it by as much as fp32 does, within {section['loss_tolerance']:.0%}",
        "",
        "| option | ms/img | speedup | max levels from fp32 | pixels >1 level | loss × fp32's | effect × fp32's | "
        "within | first call s | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in section["options"]:
        within = {True: "yes", False: "no"}.get(row.get("within_tolerance"), "—")
        lines.append(
            f"| {row['option']} | {number(row.get('ms_per_image'))} | {number(row.get('speedup'), 2)} | "
            f"{number(row.get('max_levels'), 2)} | {number(row.get('fraction_over_one_level'), 4)} | "
            f"{number(row.get('backbone_loss_vs_fp32'))} | {number(row.get('effect_vs_fp32'), 4)} | {within} | "
            f"{number(row.get('first_call_seconds'), 1)} | "
            f"{row.get('error') or row.get('skipped') or ''} |"
        )
    return lines


def end_to_end_lines(section: dict) -> list[str]:
    joined = {True: "yes", False: "no"}
    lines = ["| run | exit | joined DDP |", "|---|---|---|"]
    lines += [
        f"| {name} | {run['returncode']} | {joined.get(run.get('joined'), '—')} |"
        for name, run in section.get("runs", {}).items()
    ]
    lines += ["", "| comparison | n | within tolerance | metrics outside |", "|---|---|---|---|"]
    lines += [
        f"| {name} | {comparison['n_samples']} | {'yes' if comparison['within_tolerance'] else 'no'} | "
        f"{', '.join(comparison['outside'])} |"
        for name, comparison in section.get("comparisons", {}).items()
    ]
    return lines


def networks_lines(networks: dict) -> list[str]:
    lines = ["| network | batch | fwd+bwd ms/img | fwd ms/img | peak MiB | error |", "|---|---|---|---|---|---|"]
    for key, timing in networks.items():
        milliseconds = {
            name: None if timing.get(name) is None else timing[name] * 1e3
            for name in ("forward_backward_s_per_img", "forward_s_per_img")
        }
        lines.append(
            f"| {key} | {timing['batch_size']} | {number(milliseconds['forward_backward_s_per_img'])} | "
            f"{number(milliseconds['forward_s_per_img'])} | {number(timing.get('peak_mib'), 0)} | "
            f"{timing['error'] or ''} |"
        )
    return lines


def protect_lines(section: dict) -> list[str]:
    return [
        "| files | protected | s/img | protect s/img | wall s (with start-up) | verify exit |",
        "|---|---|---|---|---|---|",
        f"| {section.get('files', '—')} | {section.get('files_protected', '—')} | "
        f"{number(section.get('seconds_per_image'), 4)} | {number(section.get('protect_seconds_per_image'), 4)} | "
        f"{number(section.get('wall_seconds_with_startup'), 1)} | {section.get('verify_returncode', '—')} |",
    ]


def has_work(arguments: list[str]) -> bool:
    """Whether the command line has anything to measure: CUDA is there or it asks for a rehearsal. Read through
    Hydra's compose API, before Hydra makes a run folder or the command's modules are imported; a flag (--help, -m,
    --cfg) or a bad override goes on to Hydra, which answers it."""
    if any(argument.startswith("-") for argument in arguments):
        return True
    try:
        with composer():
            settings = compose("gpu_check", overrides=arguments).gpu_check
    except (HydraException, OmegaConfBaseException):
        return True
    return skip_reason(settings) is None


def main() -> None:
    if not has_work(sys.argv[1:]):
        print(SKIPPED)
        return
    from preempt.commands.entry import hydra_command

    @hydra_command("gpu_check")
    def run(cfg: DictConfig) -> None:
        if not gpu_check(cfg).get("passed", True):
            raise SystemExit(1)

    run()


if __name__ == "__main__":
    main()
