"""The standard (non-robust) CIFAR-10 ResNet-18 shipped inside the pyautoattack wheel."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from preempt.checkpoints import load_checkpoint
from preempt.files import installed_package_dir
from preempt.models.pixel_classifier import PixelClassifier
from preempt.parts.model import ModelSpec, declares_spec


def _examples_dir() -> Path:
    return installed_package_dir("pyautoattack", "the CIFAR-10 ResNet-18") / "examples"


SPEC = ModelSpec(input_shape=(3, 32, 32), num_classes=10)


@declares_spec(lambda: SPEC)
def load_autoattack_resnet18() -> PixelClassifier:
    """ResNet-18 with the weights of `examples/model_test.pt`; trained on raw [0,1] pixels."""
    examples = _examples_dir()
    spec = importlib.util.spec_from_file_location("pyautoattack_examples_resnet", examples / "resnet.py")
    resnet = importlib.util.module_from_spec(spec)
    # Registered as a module, as torch.compile (torch 2.11's dynamo) imports a traced function's module by name.
    resnet = sys.modules.setdefault(spec.name, resnet)
    spec.loader.exec_module(resnet)
    network = resnet.ResNet18()
    network.load_state_dict(load_checkpoint(examples / "model_test.pt"))
    return PixelClassifier(network, name="autoattack_resnet18", input_shape=SPEC.input_shape)
