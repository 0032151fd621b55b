"""Shared fixtures: composed configs, the digits zoo trained once per session, real sample batches; and the parts
the tests run over, discovered from conf/ and the classes' declared facts rather than listed."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_object
from omegaconf import DictConfig, open_dict

from preempt.config import group_options, register_resolvers
from preempt.speed import threads_per_process

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

register_resolvers()


def pytest_configure(config: pytest.Config) -> None:
    """Parallel workers (`make test` runs one per core) share the cores: each, and every process its tests start,
    gets its share of intra-op threads."""
    if workers := os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
        os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_process(int(workers))))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@functools.cache
def option_node(group: str, option: str) -> DictConfig:
    """An option's node as composed (a file may build on another group's file), with `main.yaml`'s defaults."""
    role = "victim" if group == "model" else group
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="main", overrides=[f"{role}={option}"])[role]


def option_target(group: str, option: str) -> type:
    """The class (or loader) an option builds."""
    return get_object(option_node(group, option)._target_)


def model_free_transforms() -> list[str]:
    """The shipped input transforms that change the images with no model of their own (DiffPure binds a score
    model, `none` changes nothing): each is a receiver_defense option and, from the same file, a defense option."""
    options = group_options("receiver_defense")
    return [
        name
        for name in options
        if option_target("receiver_defense", name).protects and not option_target("receiver_defense", name).bound
    ]


TRANSFORMS = model_free_transforms()


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One digits-zoo cache for the whole session (and the subprocess runs), trained on first use; with parallel
    workers (`pytest -n`), one for all of them: the first to need a model trains it, the others wait and load it.

    PREEMPT_TEST_ZOO=<folder> reuses a cache across sessions while developing (models are keyed by recipe).
    """
    if reused := os.environ.get("PREEMPT_TEST_ZOO"):
        return Path(reused)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "zoo"
        shared.mkdir(exist_ok=True)
        return shared
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture
def compose_config(tmp_path: Path, zoo_dir: Path) -> Callable[..., DictConfig]:
    """Compose conf/main.yaml with overrides, pointing every path at temporary folders."""

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                config_name="main",
                overrides=[
                    f"paths.cache_dir={zoo_dir}",
                    f"paths.data_dir={tmp_path / 'data'}",
                    f"paths.model_dir={tmp_path / 'models'}",
                    *overrides,
                ],
            )
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "output")
        return cfg

    return _compose


@pytest.fixture(scope="session")
def digits_models(zoo_dir: Path) -> dict[str, torch.nn.Module]:
    """The default digits classifier, backbone and victims, trained once into the session zoo."""
    from hydra.utils import instantiate

    register_resolvers()
    models = {}
    for name in ("digits_cnn", "digits_cnn_at", "digits_lenet_at", "digits_mlp"):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="main", overrides=[f"victim={name}", f"paths.cache_dir={zoo_dir}"])
        models[name] = instantiate(cfg.victim)
    return models


# The tests' digits score model: a shorter recipe than the shipped one (conf/score_model/digits.yaml), trained
# once per session into the zoo; its purified digits are as readable to the victim at small t* (tested).
TEST_SCORE_MODEL = ("score_model.width=16", "score_model.steps=800", "score_model.batch_size=64")


@pytest.fixture(scope="session")
def digits_score_model(zoo_dir: Path) -> torch.nn.Module:
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="main", overrides=[f"paths.cache_dir={zoo_dir}", *TEST_SCORE_MODEL])
    return instantiate(cfg.score_model)


@pytest.fixture(scope="session")
def digits_batch() -> tuple[torch.Tensor, torch.Tensor]:
    from preempt.datasets.digits import digits

    data = digits(n_samples=64)
    return data.images, data.labels


@pytest.fixture(scope="session")
def cifar_batch() -> tuple[torch.Tensor, torch.Tensor]:
    from preempt.datasets.package_samples import cifar10_samples

    data = cifar10_samples()
    return data.images, data.labels


@pytest.fixture(scope="session")
def resnet18() -> torch.nn.Module:
    from preempt.models.autoattack_resnet import load_autoattack_resnet18

    return load_autoattack_resnet18()


@pytest.fixture(scope="session")
def lite0() -> torch.nn.Module:
    """EfficientNet-Lite0 with its real ImageNet weights: its network is timm's `efficientnet_lite0`."""
    from preempt.models.efficientnet_lite import load_efficientnet_lite

    return load_efficientnet_lite(0)


@pytest.fixture(scope="session")
def own_model_files(lite0: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What a user gives the model options that leave it ??? (conf/model/timm.yaml, torchscript.yaml), by key:
    Lite0's real weights as a bare state dict of timm's architecture, and its network traced to TorchScript (both
    take Lite0's own mean and std, `efficientnet_lite.MEAN`/`STD`)."""
    folder = tmp_path_factory.mktemp("own_models")
    checkpoint, script = folder / "lite0.pth", folder / "lite0_traced.pt"
    torch.save(lite0.network.state_dict(), checkpoint)
    torch.jit.save(torch.jit.trace(lite0.network, torch.rand(1, *lite0.input_shape)), script)
    return {"architecture": "efficientnet_lite0", "checkpoint": str(checkpoint), "file": str(script)}


def main_arguments(output_dir: Path, zoo_dir: Path, *overrides: str) -> list[str]:
    """`src/main.py`'s arguments as a user gives them, writing into `output_dir` and sharing the session's zoo."""
    return [
        f"hydra.run.dir={output_dir}",
        f"paths.cache_dir={zoo_dir}",
        "trainer.enable_progress_bar=false",
        *overrides,
    ]


def main_command(output_dir: Path, zoo_dir: Path, *overrides: str) -> list[str]:
    """`src/main.py` as a user runs it, in a process of its own (for what needs one: DDP, signals, a kill)."""
    return [sys.executable, str(ROOT / "src" / "main.py"), *main_arguments(output_dir, zoo_dir, *overrides)]


def run_main(arguments: list[str], command: Callable[[], None] | None = None) -> int | str | None:
    """`src/main.py` (or another `@hydra_command`) with these arguments in this process, as
    `preempt.commands.reproduce_batch` runs its multiruns (a process of its own adds only ~6 s of imports): the exit
    status, or the one-line refusal it ended with."""
    import signal

    from hydra.core.global_hydra import GlobalHydra

    from preempt.commands.evaluate import main

    saved_argv, saved_handler = sys.argv, signal.getsignal(signal.SIGTERM)
    sys.argv = [str(ROOT / "src" / "main.py"), *arguments]
    try:
        (command or main)()
        return 0
    except SystemExit as exit_:
        return exit_.code
    finally:
        sys.argv = saved_argv
        signal.signal(signal.SIGTERM, saved_handler)
        GlobalHydra.instance().clear()


def assert_in_budget(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> None:
    """Same shape and dtype, pixels in [0,1], every image within eps of its clean image in `norm`."""
    from preempt.threat import distance

    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (distance(x_adv, x, norm) <= eps + 1e-5).all()


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def instantiate_error(config, error_type: type[Exception]) -> Exception:
    """The `error_type` raised by instantiating `config` (Hydra wraps it in an InstantiationException)."""
    from hydra.utils import instantiate

    with pytest.raises(Exception) as info:
        instantiate(config)
    error = info.value if isinstance(info.value, error_type) else info.value.__cause__
    assert isinstance(error, error_type), f"expected {error_type.__name__}, got {info.value!r}"
    return error


@pytest.fixture(scope="session")
def learned_robustifier(zoo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """The learn_robustifier command on the default digits config: trains A5's R into the session zoo once (a run
    with defense=a5 then loads it) and returns the backbone's accuracy on the held-out images it printed."""
    from preempt.commands.learn_robustifier import learn_robustifier

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="learn_robustifier", overrides=[f"paths.cache_dir={zoo_dir}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path_factory.mktemp("learn_robustifier"))
    return learn_robustifier(cfg)


@pytest.fixture
def no_model_building(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails the test if a run gets as far as building (or training) a model."""
    from preempt.assembly import Assembly

    def refuse(*args, **kwargs):
        raise AssertionError("models were built before the config was refused")

    monkeypatch.setattr(Assembly, "models", refuse)


def refusal(cfg: DictConfig) -> str:
    """The ConfigError an evaluation of `cfg` ends with."""
    from preempt.commands.evaluate import evaluate
    from preempt.parts import ConfigError

    with pytest.raises(ConfigError) as info:
        evaluate(cfg)
    return str(info.value)
