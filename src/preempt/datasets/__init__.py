"""Datasets yield (image in [0,1], integer label, sample index); every one takes n_samples and offset."""

from preempt.datasets.base import ImageDataset

__all__ = ["ImageDataset"]
