"""The "GT" classifier of the Fast Preemption ablation: a perfect labeler that reads the dataset labels."""


class GroundTruth:
    """Marks the classifier role as the ground truth; the evaluation loop then labels with the true labels."""
