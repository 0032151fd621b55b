"""torchvision's CIFAR-10 test split: offline, a clear error within seconds naming the folder to fill."""

import time
from pathlib import Path

import pytest

from preempt.datasets.cifar10 import DatasetNotFoundError, cifar10


def test_cifar10_offline_fails_fast_naming_the_folder(tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path)):
        cifar10(str(tmp_path), n_samples=10)
    assert time.perf_counter() - start < 30
