"""Run folders on disk: a finished run's results.json is never overwritten, a failed one is marked, and a
finished run is found again by its fingerprint."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"
FAILED_FILE = "FAILED"
FAILED_SUFFIX = "_failed"


class FinishedRunError(FileExistsError):
    """A run would write where a finished run's results.json already is."""


def refuse_finished_output_dir(output_dir: Path) -> None:
    """Never overwrite a finished run: its results.json (and its .hydra config) stay as they were."""
    existing = sorted(Path(output_dir).rglob(RESULTS_FILE)) if Path(output_dir).is_dir() else []
    if existing:
        raise FinishedRunError(
            f"{existing[0]} holds the results of a finished run. Choose another hydra.run.dir "
            f"(or hydra.sweep.dir), or move that folder away first."
        )


def mark_failed_run(output_dir: Path, reason: str) -> Path | None:
    """A run folder whose job failed gets a FAILED file with the reason and the suffix `_failed`, so neither a
    glance at outputs/ nor a results table mistakes it for a run; a finished run's folder is never touched."""
    folder = Path(output_dir)
    if not folder.is_dir() or any(folder.rglob(RESULTS_FILE)):
        return None
    (folder / FAILED_FILE).write_text(reason.rstrip() + "\n", encoding="utf-8")
    if folder.name.endswith(FAILED_SUFFIX):
        return folder
    marked = folder.with_name(folder.name + FAILED_SUFFIX)
    if marked.exists():
        return folder
    return folder.rename(marked)


def remove_unused_run_folder(output_dir: Path) -> None:
    """The folder Hydra made for a skipped run holds only its own files (`.hydra/`, the job's log): removed, so
    it is not taken for a run that failed or is still going."""
    if not output_dir.is_dir():
        return
    files = [path.relative_to(output_dir) for path in output_dir.rglob("*") if path.is_file()]
    if all(path.parts[0] == ".hydra" or path.suffix == ".log" for path in files):
        shutil.rmtree(output_dir)


def unfinished_runs(folders: list[Path]) -> tuple[list[Path], list[Path]]:
    """Run folders (a `.hydra/` config) below `folders` without results.json: marked failed, and the others
    (still running, or killed before they could be marked)."""
    runs = {hydra.parent for folder in folders for hydra in folder.rglob(".hydra")}
    open_runs = sorted(run for run in runs if not (run / RESULTS_FILE).exists())
    failed = [run for run in open_runs if (run / FAILED_FILE).exists()]
    return failed, [run for run in open_runs if run not in failed]


def find_finished_run(fingerprint: str, log_dir: Path) -> Path | None:
    """The first results.json under `log_dir` (sorted) recording this fingerprint; unreadable files are passed."""
    for path in sorted(Path(log_dir).rglob(RESULTS_FILE)) if Path(log_dir).is_dir() else []:
        try:
            recorded = json.loads(path.read_text()).get("run", {}).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            continue
        if recorded == fingerprint:
            return path
    return None


def load_results(paths: Iterable[Path]) -> list[dict]:
    return [json.loads(Path(path).read_text()) for path in paths]


def results_below(folders: Iterable[Path]) -> list[Path]:
    """Every results.json below the folders, sorted."""
    return sorted(path for folder in folders for path in Path(folder).rglob(RESULTS_FILE))
