"""Builds every part from the composed config, runs the test loop, writes results.json and the table."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from preempt.datasets.base import ImageDataset
from preempt.evaluation import EvaluationDataModule, PreemptiveEvaluation
from preempt.models import PixelClassifier
from preempt.results import (
    RESULTS_FILE,
    TABLE_FILE,
    build_results,
    format_table,
    load_results,
    write_json_atomically,
)

MODEL_ROLES = ("classifier", "backbone", "victim")


def instantiate_models(cfg: DictConfig) -> dict:
    """Classifier, backbone and victim; roles with identical configs share one instance (and its memory)."""
    models: dict = {}
    built: list[tuple[dict, object]] = []
    for role in MODEL_ROLES:
        spec = OmegaConf.to_container(cfg[role], resolve=True)
        shared = next((model for other, model in built if other == spec), None)
        models[role] = shared if shared is not None else instantiate(cfg[role])
        built.append((spec, models[role]))
    return models


def check_models_fit_dataset(models: dict, dataset: ImageDataset) -> None:
    """Fail before any work when a model cannot take the dataset's images (the error names both)."""
    for model in models.values():
        if isinstance(model, PixelClassifier):
            model.check_input(dataset.images[:1])


def instantiate_loggers(cfg: DictConfig) -> list:
    return [instantiate(spec) for spec in (cfg.get("logger") or {}).values() if spec is not None]


def task_overrides() -> list[str]:
    """The command-line overrides of this run, recorded so tables can tell sweep jobs apart."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def evaluate(cfg: DictConfig) -> dict | None:
    """Run protect -> attack -> score; returns the results on the global-zero process, None elsewhere."""
    started = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dataset = instantiate(cfg.dataset)
    models = instantiate_models(cfg)
    check_models_fit_dataset(models, dataset)
    module = PreemptiveEvaluation(
        **models,
        defense=instantiate(cfg.defense),
        attack=instantiate(cfg.attack),
        num_classes=dataset.num_classes,
        seed=cfg.seed,
    )
    datamodule = EvaluationDataModule(dataset, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    loggers = instantiate_loggers(cfg)
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False)
    config = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(config)

    trainer.test(module, datamodule=datamodule, verbose=False)

    if not trainer.is_global_zero:
        return None
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith("test/")}
    results = build_results(
        config, metrics, len(dataset), wall_seconds=time.perf_counter() - started, overrides=task_overrides()
    )
    output_dir = Path(cfg.paths.output_dir)
    table = format_table(load_results([write_json_atomically(results, output_dir / RESULTS_FILE)]))
    (output_dir / TABLE_FILE).write_text(table + "\n")
    print(f"\n{table}\n\nresults: {output_dir / RESULTS_FILE}")
    return results
