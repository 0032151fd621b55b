"""The protect -> attack -> score test loop and the data it runs on."""

from preempt.evaluation.datamodule import BatchShardSampler, EvaluationDataModule
from preempt.evaluation.module import PreemptiveEvaluation

__all__ = ["BatchShardSampler", "EvaluationDataModule", "PreemptiveEvaluation"]
