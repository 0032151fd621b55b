"""`python src/main.py [overrides]` (or `python -m preempt.commands.evaluate`): protect -> attack -> score.

Builds every part from the composed config (`preempt.assembly`), runs the test loop, writes results.json and the
table beside the run's Hydra config.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from preempt.assembly import Assembly
from preempt.commands.entry import hydra_command, print_config_tree, task_overrides
from preempt.evaluation import EvaluationDataModule
from preempt.evaluation.datamodule import check_every_process_gets_a_batch, expected_processes
from preempt.evaluation.rank_failures import RankFailedError, RankFailureReport
from preempt.evaluation.selection import select_images
from preempt.files import write_json_atomically, write_text_atomically
from preempt.fingerprint import run_fingerprint
from preempt.logger import finish_wandb_run
from preempt.results.record import build_results
from preempt.results.store import (
    RESULTS_FILE,
    TABLE_FILE,
    find_finished_run,
    load_results,
    refuse_finished_output_dir,
    remove_unused_run_folder,
)
from preempt.results.tables import format_table
from preempt.speed import keep_freed_memory
from preempt.validation import check_parts_fit_dataset, validate_config

log = logging.getLogger(__name__)


def instantiate_loggers(cfg: DictConfig) -> list:
    return [instantiate(spec) for spec in (cfg.get("logger") or {}).values() if spec is not None]


def evaluate(cfg: DictConfig) -> dict | None:
    """Run protect -> attack -> score; returns the results on the global-zero process, None elsewhere.

    Everything that can be checked is checked first, cheapest first: the config alone, then against the
    loaded dataset, then the built models on one image; only then does the test loop start.
    """
    started = time.perf_counter()
    warnings = validate_config(cfg)
    for warning in warnings:
        log.warning(warning)
    output_dir = Path(cfg.paths.output_dir)
    refuse_finished_output_dir(output_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    if config["skip_finished"]:
        finished = find_finished_run(run_fingerprint(config), Path(config["paths"]["log_dir"]))
        if finished is not None:
            remove_unused_run_folder(output_dir)
            print(f"skipped: this exact run finished before, in {finished} (skip_finished=false runs it again)")
            return json.loads(finished.read_text())
    if config["speed"]["keep_freed_memory"]:
        keep_freed_memory()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dataset = instantiate(cfg.dataset)
    check_parts_fit_dataset(config, dataset)
    offered, processes = len(dataset), expected_processes(config["trainer"])
    # Before any model is built; a selection can only make the split harder, so it is checked again if it drops any.
    check_every_process_gets_a_batch(offered, cfg.batch_size, processes)
    module = Assembly(cfg).evaluation(dataset)
    dataset = select_images(dataset, cfg.evaluate_on, module.victim, cfg.batch_size)
    if len(dataset) < offered:
        check_every_process_gets_a_batch(len(dataset), cfg.batch_size, processes)
    datamodule = EvaluationDataModule(dataset, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    loggers = instantiate_loggers(cfg)
    failures = RankFailureReport(output_dir / ".rank_failures")
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=[failures])
    for logger in loggers:
        logger.log_hyperparams(config)

    try:
        trainer.test(module, datamodule=datamodule, verbose=False)
    except Exception as error:
        cause = failures.first_failure(other_than=trainer.global_rank)
        if cause is not None:
            raise RankFailedError(f"{cause} (this process stopped because of it; its traceback is above)") from error
        raise
    finally:
        finish_wandb_run()

    if not trainer.is_global_zero:
        return None
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith("test/")}
    results = build_results(
        config,
        metrics,
        len(dataset),
        offered=offered,
        wall_seconds=time.perf_counter() - started,
        overrides=task_overrides(),
        warnings=warnings,
        rounds=module.rounds,
        steps=module.steps,
    )
    table = format_table(load_results([write_json_atomically(results, output_dir / RESULTS_FILE)]))
    write_text_atomically(table + "\n", output_dir / TABLE_FILE)
    notes = "".join(f"\nwarning: {warning}" for warning in warnings)
    print(f"\n{table}\n{notes}\nresults: {output_dir / RESULTS_FILE}")
    return results


@hydra_command("main", marks_failed_runs=True)
def main(cfg: DictConfig) -> None:
    if cfg.get("print_config", True):
        print_config_tree(cfg)
    evaluate(cfg)


if __name__ == "__main__":
    main()
