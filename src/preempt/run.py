"""Builds every part from the composed config, runs the test loop, writes results.json and the table."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from preempt.datasets.base import ImageDataset
from preempt.defenses.base import NoDefense
from preempt.evaluation import EvaluationDataModule, PreemptiveEvaluation
from preempt.evaluation.protection_cache import ProtectionCache, protection_fingerprint
from preempt.evaluation.rank_failures import RankFailedError, RankFailureReport
from preempt.results import (
    RESULTS_FILE,
    TABLE_FILE,
    FinishedRunError,
    build_results,
    find_finished_run,
    format_table,
    load_results,
    mark_failed_run,
    refuse_finished_output_dir,
    run_fingerprint,
    write_json_atomically,
    write_text_atomically,
)
from preempt.speed import keep_freed_memory
from preempt.validation import (
    MODEL_ROLES,
    REVERSION_MODELS,
    ConfigError,
    check_every_process_gets_a_batch,
    check_models_fit_dataset,
    check_parts_fit_dataset,
    expected_processes,
    instantiate_score_model,
    option_name,
    reversion_models,
    validate_config,
)

log = logging.getLogger(__name__)


@contextlib.contextmanager
def one_line_refusals() -> Iterator[None]:
    """A refusal (bad config, finished run folder, a failed DDP rank, a loader naming a missing file) ends the
    command with one `error:` line; any other error keeps its traceback."""
    try:
        yield
    except InstantiationException as error:
        # Our loaders' errors name the file or key and the fix; Hydra's wrapper and traceback only hide that.
        if isinstance(error.__cause__, ValueError | OSError):
            raise SystemExit(f"error: {error.__cause__}") from None
        raise
    except (ConfigError, FinishedRunError, RankFailedError) as error:
        raise SystemExit(f"error: {error}") from None


def launched_process() -> bool:
    """Whether this is a process Lightning started for DDP (local rank > 0, or another node), not the job's own."""
    return int(os.environ.get("LOCAL_RANK", 0)) > 0 or int(os.environ.get("NODE_RANK", 0)) > 0


@contextlib.contextmanager
def marked_if_failed(output_dir: Path) -> Iterator[None]:
    """A job that fails (refused, crashed, stopped by a signal) leaves its run folder marked `_failed`, with the
    reason in a FAILED file (`results.mark_failed_run`). Only the job's own process marks it: a DDP process
    renaming the folder under the others would take their failure reports away."""
    try:
        yield
    except BaseException as error:
        if not (isinstance(error, SystemExit) and error.code in (0, None)) and not launched_process():
            reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            marked = mark_failed_run(output_dir, reason)
            if marked is not None and marked != Path(output_dir):
                log.error("run folder marked failed: %s", marked)
        raise


class SharedModels:
    """Builds model configs; identical configs (after resolving) share one instance, and its memory."""

    def __init__(self) -> None:
        self.built: list[tuple[dict, object]] = []

    def build(self, node: DictConfig) -> object:
        spec = OmegaConf.to_container(node, resolve=True)
        shared = next((model for other, model in self.built if other == spec), None)
        if shared is None:
            shared = instantiate(node)
            self.built.append((spec, shared))
        return shared


def instantiate_models(cfg: DictConfig, shared: SharedModels | None = None, roles: tuple = MODEL_ROLES) -> dict:
    """Classifier, backbone and victim; roles with identical configs share one instance (and its memory).

    Every role is tried before a missing weight file is reported, so one run names every file to place."""
    shared = shared or SharedModels()
    models, missing = {}, {}
    for role in roles:
        try:
            models[role] = shared.build(cfg[role])
        except InstantiationException as error:
            if not isinstance(error.__cause__, FileNotFoundError):
                raise
            missing.setdefault(str(error.__cause__), []).append(role)
    if missing:
        listed = "\n  ".join(f"{' and '.join(failing)}: {message}" for message, failing in missing.items())
        raise ConfigError(f"{len(missing)} model file(s) missing:\n  {listed}")
    return models


def instantiate_reversion(cfg: DictConfig, config: dict, shared: SharedModels) -> object:
    """The reversion stage. Preemptive Reversion's own models come from `shared` (an attacker's backbone that is
    also a role here is one instance); with anything of its own it re-runs the sender's defense config with its
    `defense_settings` merged over, bound to its backbone (A5 gets its robustifier for that backbone)."""
    from preempt.reversions import PreemptiveReversion

    node = cfg.reversion
    if get_object(node._target_) is not PreemptiveReversion:
        return instantiate(node)
    own_models = {key: shared.build(node[key]) for key in REVERSION_MODELS if node.get(key) is not None}
    reversion = instantiate(node, **own_models)
    if reversion.knowledge == "black-box":
        defense_config = OmegaConf.merge(config["defense"], reversion.defense_settings)
        attacker = {
            **config,
            "defense": OmegaConf.to_container(defense_config),
            "backbone": config["reversion"]["backbone"] or config["backbone"],
        }
        backbone = reversion.backbone if reversion.backbone is not None else shared.build(cfg.backbone)
        reversion.defense_factory = bind_robustifier(instantiate(defense_config), attacker, backbone)
    return reversion


def instantiate_loggers(cfg: DictConfig) -> list:
    return [instantiate(spec) for spec in (cfg.get("logger") or {}).values() if spec is not None]


def bind_approximator(attack: functools.partial, config: dict) -> functools.partial:
    """BPDA with `approximation=learned` gets its auto-encoder imitating the receiver's g: loaded from the cache,
    or trained there on the dataset's training images on first use (like the digits zoo)."""
    if config["attack"].get("approximation") != "learned":
        return attack
    from preempt.attacks.approximator import load_or_train_approximator

    cache_dir = config["paths"]["cache_dir"]
    approximator = load_or_train_approximator(config["receiver_defense"], config["dataset"], cache_dir)
    return functools.partial(attack, approximator=approximator)


def bind_robustifier(defense: functools.partial, config: dict, backbone: object) -> functools.partial:
    """A5 without a checkpoint gets the project's robustifier for this backbone and dataset: loaded from the cache,
    or trained there against the backbone on the dataset's training images on first use (like the digits zoo)."""
    from preempt.defenses.a5 import A5, load_or_train_robustifier

    if getattr(defense, "func", None) is not A5 or config["defense"].get("checkpoint") is not None:
        return defense
    cache_dir = config["paths"]["cache_dir"]
    robustifier = load_or_train_robustifier(defense(), backbone, config["backbone"], config["dataset"], cache_dir)
    return functools.partial(defense, robustifier=robustifier)


def bind_score_model(
    transform: object, config: dict, image_shape: tuple[int, ...], score_model: object | None = None
) -> object:
    """A transform that purifies with a diffusion model (DiffPure) gets the score_model group's model (`score_model`
    when one is built already): loaded from its checkpoint, or the project's digits model, trained on first use;
    refused if it cannot take these images."""
    from preempt.receiver_defenses.diffpure import DiffPure

    if not isinstance(transform, DiffPure) or transform.score_model is not None:
        return transform
    transform.score_model = score_model if score_model is not None else instantiate_score_model(config)
    try:
        transform.check_fits(image_shape)
    except ValueError as error:
        raise ConfigError(f"score_model={option_name(config, 'score_model')}: {error}") from None
    return transform


def finish_wandb_run() -> None:
    """End this job's W&B run: it stays the process's current run otherwise, and in a multirun every later job's
    logger would attach to it (job 1 logging into job 0's run, with no run folder of its own)."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        offline = wandb.run.settings.mode in ("offline", "dryrun")
        folder = Path(wandb.run.dir).parent
        wandb.finish()
        if offline:
            print(f"W&B run (offline): {folder}  (upload it with: wandb sync {folder})")


def remove_unused_run_folder(output_dir: Path) -> None:
    """The folder Hydra made for a skipped run holds only its own files (`.hydra/`, the job's log): removed, so
    it is not taken for a run that failed or is still going."""
    if not output_dir.is_dir():
        return
    files = [path.relative_to(output_dir) for path in output_dir.rglob("*") if path.is_file()]
    if all(path.parts[0] == ".hydra" or path.suffix == ".log" for path in files):
        shutil.rmtree(output_dir)


def protection_cache(config: dict) -> ProtectionCache | None:
    """The protected-image cache when `protection_cache=true` and there is a protection to keep."""
    if not config["protection_cache"] or get_object(config["defense"]["_target_"]) is NoDefense:
        return None
    return ProtectionCache(Path(config["paths"]["protected_dir"]), protection_fingerprint(config))


def task_overrides() -> list[str]:
    """The command-line overrides of this run, recorded so tables can tell sweep jobs apart."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def evaluation_module(
    cfg: DictConfig, config: dict, dataset: ImageDataset, shared: SharedModels
) -> PreemptiveEvaluation:
    """The test loop's module: every part built and bound to its models (from `shared`), each model checked
    against the dataset as soon as it is built."""
    models = instantiate_models(cfg, shared)
    check_models_fit_dataset(models, dataset)
    reversion = instantiate_reversion(cfg, config, shared)
    check_models_fit_dataset(reversion_models(reversion), dataset)
    receiver_defense = bind_score_model(instantiate(cfg.receiver_defense), config, dataset.image_shape)
    score_model = getattr(receiver_defense, "score_model", None)
    return PreemptiveEvaluation(
        **models,
        defense=bind_robustifier(instantiate(cfg.defense), config, models["backbone"]),
        attack=bind_approximator(instantiate(cfg.attack), config),
        num_classes=dataset.num_classes,
        seed=cfg.seed,
        transmit_8bit=cfg.transmit_8bit,
        receiver_defense=receiver_defense,
        oblivious=cfg.threat.oblivious,
        reversion=bind_score_model(reversion, config, dataset.image_shape, score_model),
        speed=config["speed"],
        per_sample_randomness=cfg.randomness == "per_sample",
        protection_cache=protection_cache(config),
    )


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
    check_every_process_gets_a_batch(len(dataset), cfg.batch_size, expected_processes(config["trainer"]))
    module = evaluation_module(cfg, config, dataset, SharedModels())
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
        wall_seconds=time.perf_counter() - started,
        overrides=task_overrides(),
        warnings=warnings,
        rounds=module.rounds,
    )
    table = format_table(load_results([write_json_atomically(results, output_dir / RESULTS_FILE)]))
    write_text_atomically(table + "\n", output_dir / TABLE_FILE)
    notes = "".join(f"\nwarning: {warning}" for warning in warnings)
    print(f"\n{table}\n{notes}\nresults: {output_dir / RESULTS_FILE}")
    return results
