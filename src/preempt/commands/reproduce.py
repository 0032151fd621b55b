"""`python -m preempt.commands.reproduce --scale quick` (what `make reproduce-tables` runs): both papers' tables.

Reads every table under sweeps/tables/ (all checked before anything runs), works out each cell's runs by their
fingerprint, runs only the missing ones (a Hydra multirun per cell over its missing seeds), then renders each
table as Markdown and LaTeX with its figures under outputs/tables/<scale>/, and logs them to W&B (offline).
Stopped half way (Ctrl-C, a kill), it keeps every run that finished and renders nothing; run it again to go on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from preempt.config import composer, project_root
from preempt.files import FolderInUseError, exit_cleanly_on_sigterm, lock_folder, write_text_atomically
from preempt.reproduce import render
from preempt.reproduce.cost import PricedRun
from preempt.reproduce.runs import (
    DONE,
    ROOT,
    Cell,
    cell_results,
    finished_runs,
    missing_seeds,
    multirun_arguments,
    table_cells,
)
from preempt.reproduce.tables import SCALES, TABLES_DIR, Figure, Table, load_tables

DEFAULT_OUT = Path(project_root()) / "outputs" / "tables"
DEFAULT_GPU_CHECK = Path(project_root()) / "outputs" / "gpu_check" / "gpu_check.json"
# Figures 4 and 5 are drawn on the setting of Table IV's CIFAR-10 rows; on real photos, on its ImageNet rows with the
# 1/255 PGD of the imagenet_lite table (AutoAttack at 224 takes minutes per photo on a CPU).
PICTURES_PRESET = "fast_preemption_cifar10"
PICTURES_SETTINGS = {
    "quick": [f"experiment={PICTURES_PRESET}"],
    "imagenet_lite": ["experiment=fast_preemption_imagenet", "attack=pgd", "attack.eps=${div:1,255}"],
    "paper": [f"experiment={PICTURES_PRESET}"],
}
# Figure 7's backbones per scale: Table VII's (on real photos, the three EfficientNet-Lite models; at the paper's
# scale its two robust CIFAR-10 backbones and a standard ResNet-18 for contrast). Quick: the pictures command's
# default, the digits zoo's (`preempt.reproduce.pictures.FIGURE7_BACKBONES`, read when drawing: it loads torch).
PICTURES_BACKBONES = {
    "imagenet_lite": ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"],
    "paper": ["Peng2023Robust", "Gowal2021Improving_R18_ddpm_100m", "autoattack_resnet18"],
}
# The table processes now running, so a stop can end them all.
RUNNING: set[subprocess.Popen] = set()


def plan(
    tables: list[Table], scale: str, overrides: list[str], composed: dict[str, list[PricedRun]] | None = None
) -> dict[str, list[Cell]]:
    """Every table's cells. All tables are tried first, then every bad setting and missing file is reported in
    one message, each with the tables it stops. `composed` gets each table's runs' resolved configs (for the cost),
    those a missing file stops included."""
    cells, problems = {}, {}
    with composer():
        for table in tables:
            found_configs = composed.setdefault(table.name, []) if composed is not None else None
            cells[table.name], found = table_cells(table, scale, overrides, found_configs)
            for message, where in found.items():
                problems.setdefault(message, []).extend(where)
    if problems:
        listed = []
        for message, where in problems.items():
            names = list(dict.fromkeys(place.split(":")[0] for place in where))
            listed.append(f"{message}\n    ({len(where)} cells of {', '.join(names)})")
        raise ValueError("\n".join(listed))
    return cells


def last_error(log_file: Path) -> str:
    """The failed run's own one-line reason (`error: ...`), or the last line of its traceback, in the log's last
    command (a log keeps the output of every invocation)."""
    latest = log_file.read_text(errors="replace").rsplit("\n$ ", 1)[-1]
    lines = [line for line in latest.splitlines() if line.strip()]
    reasons = [line for line in lines if line.startswith("error:")]
    return (reasons or lines or ["(empty log)"])[-1]


def run_missing(
    cells: dict[str, list[Cell]], runs_dir: Path, logs_dir: Path, keep_going: bool, jobs: int = 1
) -> list[str]:
    """Run every cell's missing seeds, one process per table (`preempt.commands.reproduce_batch`), `jobs` tables at
    a time; returns the cells whose multirun failed. The first failure starts no further table unless `keep_going` (a
    missing file or a broken setting would fail every cell after it the same way)."""
    from preempt.speed import threads_per_process

    finished = finished_runs(runs_dir)
    todo = {
        table: [(cell, seeds) for cell in table_cells if (seeds := missing_seeds(cell, finished))]
        for table, table_cells in cells.items()
    }
    total = sum(len(cell.fingerprints) for table in cells.values() for cell in table)
    missing = sum(len(seeds) for table in todo.values() for _, seeds in table)
    multiruns = sum(len(table) for table in todo.values())
    print(f"{total - missing} of {total} runs finished before; {missing} to run in {multiruns} multiruns", flush=True)
    train_first_use_models([cell for table in todo.values() for cell, _ in table])
    failed, done, started, lock = [], [], time.perf_counter(), threading.Lock()
    # Several processes share the cores: each gets its share of threads, unless OMP_NUM_THREADS says otherwise.
    shared = jobs > 1 and "OMP_NUM_THREADS" not in os.environ
    threads = {"OMP_NUM_THREADS": str(threads_per_process(jobs))} if shared else {}

    def run_table(table: str) -> None:
        if failed and not keep_going:
            return
        log_file = logs_dir / f"{table}.log"
        commands = [
            {"name": cell.folder, "arguments": multirun_arguments(cell, seeds, runs_dir)} for cell, seeds in todo[table]
        ]
        for name, status in run_batch(commands, log_file, keep_going, threads):
            with lock:
                done.append(name)
                verdict = "ok" if status == 0 else f"FAILED (exit {status}; see {log_file})"
                minutes = (time.perf_counter() - started) / 60
                print(f"[{len(done)}/{multiruns} {minutes:.1f} min] {name}: {verdict}", flush=True)
                if status != 0:
                    failed.append(name)
                    print(f"    {last_error(log_file)}", flush=True)

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        # The tables with the most runs first, so the last one to end is not a long one started last.
        by_size = sorted((table for table, work in todo.items() if work), key=lambda table: -len(todo[table]))
        for future in [pool.submit(run_table, table) for table in by_size]:
            future.result()
    except BaseException:
        # Stopped (Ctrl-C, SIGTERM): the table processes go too, or the pool would wait for them to finish.
        for process in list(RUNNING):
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return failed


def train_first_use_models(cells: list[Cell]) -> None:
    """Load, or train and cache, every model the cells' runs train on first use, here, one after another with
    every core. Left to the runs, two table processes would each train the same model side by side on their share
    of the cores (the digits score model: 13 minutes on 2 cores, 21 on one)."""
    from hydra.utils import instantiate

    nodes = list(dict.fromkeys(node for cell in cells for node in cell.first_use))
    if not nodes:
        return
    print(f"{len(nodes)} model(s) the runs train on first use: loading them, or training them here", flush=True)
    started = time.perf_counter()
    for node in nodes:
        instantiate(json.loads(node))
    print(f"    in place after {time.perf_counter() - started:.0f} s", flush=True)


def run_batch(
    commands: list[dict], log_file: Path, keep_going: bool, environment: dict[str, str]
) -> Iterator[tuple[str, int]]:
    """Run the multiruns in one `preempt.commands.reproduce_batch` process, its output appended to `log_file`; yields
    each multirun's name and exit status as it ends. The process is stopped with this one (Ctrl-C, SIGTERM)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    commands_file = log_file.with_suffix(".commands.json")
    write_text_atomically(json.dumps(commands, indent=1), commands_file)
    command = [
        sys.executable,
        "-m",
        "preempt.commands.reproduce_batch",
        str(commands_file),
        *(["--keep-going"] * keep_going),
    ]
    with log_file.open("a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env={**os.environ, **environment},
        )
        RUNNING.add(process)
        try:
            statuses = []
            for line in process.stdout:
                log.write(line)
                log.flush()
                if line.startswith(DONE):
                    name, _, status = line.removeprefix(DONE).strip().rpartition(": ")
                    statuses.append(int(status))
                    yield name, int(status)
            # A process that died between multiruns (killed, out of memory) fails the one it was on.
            if process.wait() != 0 and len(statuses) < len(commands) and not any(statuses):
                yield commands[len(statuses)]["name"], process.returncode
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
            RUNNING.discard(process)


def step_curves(table: Table, figure: Figure, results: dict[tuple[str, str], list[dict]]) -> dict[str, list[dict]]:
    """A `steps` figure's curves: per row (and run, when it names several), the results that recorded steps."""
    names = {row.key: row.name for row in table.rows}
    curves: dict[str, list[dict]] = {}
    for (row, run), found in results.items():
        recorded = [result for result in found if result.get("steps")]
        if run in figure.runs and recorded:
            curves.setdefault(names[row] if len(figure.runs) == 1 else f"{names[row]} ({run})", []).extend(recorded)
    return curves


def render_all(
    tables: list[Table], cells: dict[str, list[Cell]], scale: str, out_dir: Path, runs_dir: Path, extra: str = ""
) -> list:
    """Each table's .md and .tex and its figures, and index.md with them all (and `extra`, a section of its
    own); returns what was written."""
    from preempt.figures import plot_rounds, plot_steps

    finished = finished_runs(runs_dir)
    written, sections = [], []
    for table in tables:
        results = {(cell.row, cell.run): cell_results(cell, finished) for cell in cells[table.name]}
        rendered = render.build(table, scale, results)
        text = render.markdown(rendered)
        written.append(write_text_atomically(text, out_dir / f"{table.name}.md"))
        written.append(write_text_atomically(render.latex(rendered), out_dir / f"{table.name}.tex"))
        figures = []
        for figure in table.figures:
            path = out_dir / figure.file
            if figure.kind == "bars":
                render.plot_bars(rendered, figure.columns, figure.title, path)
            elif figure.kind == "steps":
                curves = step_curves(table, figure, results)
                if not curves:
                    continue
                plot_steps(curves, path, f"{figure.title} (scale {scale})")
            else:
                runs = [result for (_, run), found in results.items() if run in figure.runs for result in found]
                if not runs:
                    continue
                plot_rounds(runs, path, f"{figure.title} (scale {scale})")
            figures.append(path)
        written += figures
        sections.append(text + "".join(f"\n![{path.stem}]({path.name})\n" for path in figures))
        print(f"{table.name}: {'complete' if rendered.complete else 'INCOMPLETE'} -> {out_dir / table.name}.md")
    written.append(write_text_atomically("\n".join([*sections, extra]), out_dir / "index.md"))
    return written


def costs(composed: dict[str, list[PricedRun]], runs_dir: Path, gpu_check: Path) -> str:
    """Each table's network passes and GPU hours (`preempt.reproduce.cost`), the finished runs apart."""
    from preempt.fingerprint import run_fingerprint
    from preempt.models.paper_networks import load_network_flops
    from preempt.reproduce.cost import format_costs, pass_times, table_costs

    finished = finished_runs(runs_dir)
    runs = [
        dataclasses.replace(run, finished=run_fingerprint(dict(run.config)) in finished)
        for table in composed.values()
        for run in table
    ]
    times = pass_times(gpu_check, load_network_flops())
    return "\n" + format_costs(table_costs(runs, times), times, "one H100")


# Figure 4's caption: the protected images' mean SSIM to the originals (CIFAR-10, Linf 8/255).
FIGURE4_PUBLISHED_SSIM = 0.962


def draw_pictures(
    scale: str, overrides: list[str], out_dir: Path, logs_dir: Path, draw: bool = True
) -> tuple[list[Path], str]:
    """Figures 4, 5 and 7 (`preempt.commands.pictures`) on a Table IV preset at this scale, drawn again only when
    their settings changed (never when not `draw`); the figures and a Markdown section for index.md."""
    from preempt.reproduce.pictures import FIGURE4_FILE, FIGURE5_FILE, FIGURE7_BACKBONES, FIGURE7_FILE, NUMBERS_FILE

    folder = out_dir / "figures_4_5"
    arguments = [*PICTURES_SETTINGS[scale], f"scale={scale}", *overrides]
    backbones = PICTURES_BACKBONES.get(scale, list(FIGURE7_BACKBONES))
    numbers_file = folder / NUMBERS_FILE
    drawn = json.loads(numbers_file.read_text()) if numbers_file.is_file() else {}
    if drawn.get("overrides") != arguments or list(drawn.get("figure7", {}).get("backbones", {})) != backbones:
        if not draw:
            return [], ""
        log_file = logs_dir / "figures_4_5.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("a") as log:
            command = [
                sys.executable, "-m", "preempt.commands.pictures", str(folder), *arguments, "--backbones", *backbones
            ]  # fmt: skip
            status = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT).returncode
        if status != 0:
            print(f"figures 4, 5 and 7: FAILED (exit {status}; see {log_file})\n    {last_error(log_file)}")
            return [], ""
    numbers = json.loads(numbers_file.read_text())
    two_runs, reversions = numbers["figure5"]["two_runs"], numbers["figure5"]["reversions"]
    erased = ", ".join(f"{entry['knowledge']} {100 * entry['mean_erased']:.0f}%" for entry in reversions.values())
    similarity = ", ".join(
        f"{name} {entry['mean_ssim_to_original']}" for name, entry in numbers["figure7"]["backbones"].items()
    )
    section = (
        f"### Fast Preemption, Figures 4 and 5: perturbations (`{' '.join(arguments)}`)\n\n"
        f"{len(numbers['figure4']['images'])} images of {numbers['dataset']}, {numbers['norm']} {numbers['eps']:.3g}; "
        f"mean SSIM {numbers['figure4']['mean_ssim']} (the paper's: {FIGURE4_PUBLISHED_SSIM}), protected images that "
        f"survive {numbers['attack']}: "
        f"{100 * numbers['figure4']['success_rate']:.0f}%. Two runs with different seeds: mean cosine "
        f"{two_runs['mean_cosine']}, signs agreeing {100 * two_runs['mean_sign_agreement']:.0f}%. Share of the "
        f"protection's L2 that Preemptive Reversion erases: {erased}.\n\n"
        f"![figure 4](figures_4_5/{FIGURE4_FILE})\n\n![figure 5](figures_4_5/{FIGURE5_FILE})\n\n"
        f"Figure 7, each backbone's protection: SSIM of its δ_Gray with the gray original: {similarity}.\n\n"
        f"![figure 7](figures_4_5/{FIGURE7_FILE})\n"
    )
    print(f"figures 4, 5 and 7 -> {folder}")
    return [folder / FIGURE4_FILE, folder / FIGURE5_FILE, folder / FIGURE7_FILE], section


def log_to_wandb(paths: list[Path], scale: str, out_dir: Path) -> None:
    """The rendered tables (as W&B tables of their Markdown rows) and figures, in one offline run."""
    import wandb

    run = wandb.init(
        project="preemptive-defense",
        name=f"reproduce-tables-{scale}",
        job_type="reproduce-tables",
        dir=out_dir,
        mode="offline",
        settings=wandb.Settings(silent=True),
    )
    for path in paths:
        if path.suffix == ".png":
            run.log({f"figures/{path.stem}": wandb.Image(str(path))})
        elif path.suffix == ".md" and path.stem != "index":
            lines = [line for line in path.read_text().splitlines() if line.startswith("|") and "---|" not in line]
            header, *rows = ([cell.strip() for cell in line.strip("|").split("|")] for line in lines)
            run.log({f"tables/{path.stem}": wandb.Table(columns=header, data=rows)})
    folder = Path(run.dir).parent
    run.finish()
    print(f"W&B run (offline): {folder}  (upload it with: wandb sync {folder})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m preempt.commands.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=SCALES, default="quick")
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides for every run, e.g. paths.model_dir=/data/models trainer=gpu"
    )
    parser.add_argument("--tables", nargs="*", help="table names (sweeps/tables/<name>.yaml); default: all")
    parser.add_argument("--tables-dir", type=Path, default=TABLES_DIR, help="default: sweeps/tables")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: outputs/tables")
    parser.add_argument("--render-only", action="store_true", help="render what finished, run nothing")
    parser.add_argument(
        "--plan", action="store_true", help="list the multiruns that would run and what they cost, run nothing"
    )
    parser.add_argument(
        "--gpu-check",
        type=Path,
        default=DEFAULT_GPU_CHECK,
        help="the pass times --plan prices with (default: the newest `make gpu-check`, outputs/gpu_check/)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="tables run at once, each in its own process")
    parser.add_argument("--keep-going", action="store_true", help="run the other cells after one fails")
    parser.add_argument("--no-pictures", action="store_true", help="do not draw Figures 4, 5 and 7")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the tables and figures to W&B")
    args = parser.parse_args(argv)
    exit_cleanly_on_sigterm()
    out_dir, runs_dir = args.out / args.scale, args.out / args.scale / "runs"
    composed: dict[str, list[PricedRun]] = {}
    try:
        tables = load_tables(args.tables, args.tables_dir)
        skipped = [table.name for table in tables if args.scale not in table.scales]
        if skipped:
            print(f"no cells at scale {args.scale}: {', '.join(skipped)}")
        tables = [table for table in tables if args.scale in table.scales]
        cells = plan(tables, args.scale, args.overrides, composed if args.plan else None)
    except ValueError as error:
        if args.plan and any(composed.values()):  # what it would cost once the missing files are in place
            print(costs(composed, runs_dir, args.gpu_check))
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.plan:
        finished = finished_runs(runs_dir)
        for cell in (cell for table in cells.values() for cell in table):
            if seeds := missing_seeds(cell, finished):
                print(" ".join(["src/main.py", *multirun_arguments(cell, seeds, runs_dir)]))
        print(costs(composed, runs_dir, args.gpu_check))
        return 0
    try:  # two reproductions into one folder would run the same cells twice and render over each other
        lock_folder(out_dir, f"reproduce --scale {args.scale}")
    except FolderInUseError as error:
        print(f"error: {error} (or give another --out)", file=sys.stderr)
        return 2
    except OSError as error:
        print(
            f"error: {out_dir} cannot be written ({error.strerror}): give --out a folder you can write", file=sys.stderr
        )
        return 2
    logs_dir = out_dir / "logs"
    failed = [] if args.render_only else run_missing(cells, runs_dir, logs_dir, args.keep_going, args.jobs)
    pictures, section = ([], "")
    if not args.no_pictures:
        pictures, section = draw_pictures(args.scale, args.overrides, out_dir, logs_dir, draw=not args.render_only)
    written = [*render_all(tables, cells, args.scale, out_dir, runs_dir, section), *pictures]
    summary = {"scale": args.scale, "tables": [table.name for table in tables], "failed_cells": failed}
    write_text_atomically(json.dumps(summary, indent=1) + "\n", out_dir / "summary.json")
    if not args.no_wandb:
        log_to_wandb(written, args.scale, out_dir)
    if failed:
        print(f"{len(failed)} cell(s) failed: {', '.join(failed)} (their logs are under {out_dir / 'logs'})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
