"""Models take [0,1] pixels, normalize inside, and stay frozen in eval mode."""

from preempt.models.ground_truth import GroundTruth
from preempt.models.pixel_classifier import ImageShapeMismatchError, PixelClassifier

__all__ = ["GroundTruth", "ImageShapeMismatchError", "PixelClassifier"]
