"""Which runs a table needs, which of them finished, and the Hydra multirun that computes the rest.

A run is known by its fingerprint (`results.run_fingerprint`: the resolved config without paths, names and
logging), computed here by composing the cell's config exactly as `src/main.py` would. So a finished run is
found wherever it was written, a run that two tables share is computed once, and a cell whose settings changed
since is run again rather than reported from stale files.

The functions that compose import the validation (and with it torch and every part) themselves, so the driver
answers --help and refuses bad arguments without loading them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import get_object
from omegaconf import OmegaConf

from preempt.config import compose_run, project_root
from preempt.fingerprint import run_fingerprint
from preempt.reproduce.cost import PricedRun
from preempt.reproduce.tables import Scale, Table, cell_overrides
from preempt.results.store import RESULTS_FILE

ROOT = Path(project_root())
# What `preempt.commands.reproduce_batch` prints after each multirun, before its name and exit status.
DONE = "== done"
# How every reproduction run is launched: results found by fingerprint, protections shared across attacks, no
# progress bars or config trees in the log, CSV metrics beside results.json (W&B gets the rendered tables).
RUN_SETTINGS = (
    "skip_finished=true",
    "protection_cache=true",
    "print_config=false",
    "trainer.enable_progress_bar=false",
    "logger=csv",
)
# Where the loaders live of the models the project trains on first use (each caches under paths.cache_dir).
FIRST_USE_TRAINERS = "preempt.zoo."


@dataclass(frozen=True)
class Cell:
    """One row under one named run; `fingerprints` maps each seed to the run it needs."""

    table: str
    row: str
    run: str
    overrides: tuple[str, ...]
    fingerprints: dict[int, str]
    # The models its runs train on first use, as JSON configs (see `first_use_models`).
    first_use: tuple[str, ...] = ()

    @property
    def folder(self) -> str:
        return f"{self.table}/{self.row}/{self.run}"


def fingerprints(
    overrides: list[str], seeds: list[int], composed: list[dict] | None = None
) -> tuple[dict[int, str], dict]:
    """The fingerprint `src/main.py` would record for these overrides at each seed (inside `config.composer()`), and
    the resolved config of the last. Composed and validated once: a seed changes only `seed` and what interpolates it
    (the quick scale's data slice). `composed` gets each seed's resolved config before validation (what a run would
    compute, for its cost, even where a weight file is missing)."""
    from preempt.validation import check_parts_fit_declared_dataset, validate_config

    cfg = compose_run("main", [*overrides, f"seed={seeds[0]}"], "unused")
    if composed is not None:
        for seed in seeds:
            cfg.seed = seed
            composed.append(OmegaConf.to_container(cfg, resolve=True))
        cfg.seed = seeds[0]
    validate_config(cfg)
    found = {}
    for seed in seeds:
        cfg.seed = seed
        config = OmegaConf.to_container(cfg, resolve=True)
        found[seed] = run_fingerprint(config)
    # A model left at another dataset's shape (a digits model in a paper preset) is refused here, before the data
    # is there, rather than by the run on the GPU machine (the shapes do not change with the seed).
    check_parts_fit_declared_dataset(config)
    return found, config


def missing_checkpoints(config: dict) -> list[Path]:
    """The RobustBench checkpoints the run's models would load that are not under paths.model_dir."""
    from preempt.models.robustbench import checkpoint_path, load_robustbench_model
    from preempt.validation import MODEL_ROLES

    nodes = [config[role] for role in MODEL_ROLES]
    paths = [
        checkpoint_path(node["name"], node["dataset"], node["threat_model"], node["model_dir"])
        for node in nodes
        if get_object(node["_target_"]) is load_robustbench_model
    ]
    return [path for path in dict.fromkeys(paths) if not path.is_file()]


def first_use_models(config: dict) -> list[dict]:
    """The configs of the models this run trains on first use and caches (loaders in `preempt.zoo`: the digits zoo,
    and the digits score model where a part is given the score model), so the driver can train each once, with
    every core, before any table starts."""
    from preempt.validation import MODEL_ROLES

    nodes = [config[role] for role in MODEL_ROLES]
    nodes += [value for value in config["reversion"].values() if isinstance(value, dict) and "_target_" in value]
    parts = [get_object(config[group]["_target_"]) for group in ("receiver_defense", "reversion")]
    if any("score_model" in getattr(part, "bound", ()) for part in parts):
        nodes.append(config["score_model"])
    return [node for node in nodes if str(node.get("_target_", "")).startswith(FIRST_USE_TRAINERS)]


def table_cells(
    table: Table, scale: Scale, extra: list[str] = (), composed: list[PricedRun] | None = None
) -> tuple[list[Cell], dict[str, list[str]]]:
    """Every cell of the table at this scale, with the fingerprint of each seed's run (inside `composer()`), and
    what stops cells from running: each bad setting or missing checkpoint, with the cells it stops. Every cell is
    tried first, so one message names them all. `extra` overrides go last, into every cell (the machine's paths,
    its trainer). `composed` gets every seed's run that composes, valid or not, to be priced."""
    cells, problems = [], {}
    for row in table.rows_at(scale):
        for run in table.runs_of(row):
            where = f"{table.name}: row {row.key}, run {run}"
            configs: list[dict] = []
            try:
                overrides = [*cell_overrides(table, row, run, scale), *extra]
                prints, config = fingerprints(overrides, table.seeds[scale], configs)
            except Exception as error:
                problems.setdefault(str(error).split("\nConfig search path")[0].strip(), []).append(where)
                continue
            finally:
                if composed is not None:
                    composed.extend(PricedRun(table.name, f"{row.key}/{run}", each) for each in configs)
            for path in missing_checkpoints(config):
                problems.setdefault(f"{path} is missing: place the RobustBench checkpoint there", []).append(where)
            first_use = tuple(json.dumps(node, sort_keys=True) for node in first_use_models(config))
            cells.append(Cell(table.name, row.key, run, tuple(overrides), prints, first_use))
    return cells, problems


def finished_runs(log_dir: Path) -> dict[str, Path]:
    """fingerprint -> results.json for every finished run under `log_dir` (the newest when one ran twice)."""
    found: dict[str, tuple[str, Path]] = {}
    for path in sorted(Path(log_dir).rglob(RESULTS_FILE)) if Path(log_dir).is_dir() else []:
        try:
            run = json.loads(path.read_text())["run"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        stamp = run.get("finished_at", "")
        if run.get("fingerprint") and stamp >= found.get(run["fingerprint"], ("", path))[0]:
            found[run["fingerprint"]] = (stamp, path)
    return {key: path for key, (_, path) in found.items()}


def missing_seeds(cell: Cell, finished: dict[str, Path]) -> list[int]:
    return [seed for seed, key in cell.fingerprints.items() if key not in finished]


def multirun_arguments(cell: Cell, seeds: list[int], runs_dir: Path) -> list[str]:
    """src/main.py's arguments for the cell's multirun over its missing seeds, in a fresh time-stamped folder."""
    sweep_dir = runs_dir / cell.folder / time.strftime("%Y-%m-%d_%H-%M-%S")
    return [
        "-m",
        *cell.overrides,
        f"seed={','.join(str(seed) for seed in seeds)}",
        *RUN_SETTINGS,
        f"paths.log_dir={runs_dir}",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweep.subdir=seed${seed}",
    ]


def cell_results(cell: Cell, finished: dict[str, Path]) -> list[dict]:
    """The finished results of a cell, one per seed that has one."""
    return [json.loads(finished[key].read_text()) for key in cell.fingerprints.values() if key in finished]
