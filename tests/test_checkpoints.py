import os
import re
from pathlib import Path

import pytest
import torch

from preempt.checkpoints import CheckpointError, load_checkpoint, tensors_only_loads

UNPICKLED = []


class Payload:
    """Stands for any pickled object: unpickling it runs this module's code."""

    def __setstate__(self, state: dict) -> None:
        UNPICKLED.append(self)
        self.__dict__.update(state)


def _weights() -> dict[str, torch.Tensor]:
    return {"w": torch.arange(1000.0).view(10, 100), "b": torch.ones(10)}


def _error(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in message
    return message


def test_a_state_dict_loads_on_the_cpu(tmp_path: Path) -> None:
    torch.save(_weights(), tmp_path / "ok.pt")
    loaded = load_checkpoint(tmp_path / "ok.pt")
    assert loaded.keys() == _weights().keys()
    assert all(torch.equal(loaded[k], v) for k, v in _weights().items())


def test_missing_file_is_named(tmp_path: Path) -> None:
    assert "does not exist" in _error(tmp_path / "absent.pt")


def test_empty_file_is_an_interrupted_write(tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    assert re.search(
        r"empty \(0 bytes\).*interrupted.*download or copy the checkpoint again", _error(tmp_path / "empty.pt")
    )


@pytest.mark.parametrize("page", ["<!DOCTYPE html><html><body>Virus scan warning</body></html>", "<html lang=en>"])
@pytest.mark.parametrize("prefix", ["", "\ufeff \n\t"])
def test_html_page_is_reported_as_a_web_page(tmp_path: Path, page: str, prefix: str) -> None:
    path = tmp_path / "model.pt"
    path.write_text(prefix + page, encoding="utf-8")
    message = _error(path)
    assert "web page" in message and "Google Drive" in message
    assert re.search(r"again by hand .* place it at " + re.escape(str(path)), message)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_file_is_reported_as_truncated(tmp_path: Path, zip_format: bool, keep: float) -> None:
    whole = tmp_path / "whole.pt"
    torch.save(_weights(), whole, _use_new_zipfile_serialization=zip_format)
    data = whole.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: int(len(data) * keep)])
    assert re.search(r"truncated or corrupt .* download or copy the checkpoint again", _error(cut))


@pytest.mark.parametrize(
    "content", [Payload(), {"state_dict": _weights(), "config": Payload()}], ids=["object", "dict"]
)
def test_pickled_code_is_refused_with_the_conversion(tmp_path: Path, content: object) -> None:
    path = tmp_path / "pickled.pt"
    torch.save(content, path)
    UNPICKLED.clear()
    message = _error(path)
    assert not UNPICKLED, "the checkpoint's objects were unpickled"
    assert "pickled Python objects" in message and "run code" in message and "tensors only" in message
    assert f"{Payload.__module__}.Payload" in message
    assert f"torch.load('{path}', weights_only=False)['state_dict']" in message


def test_tensors_only_loads_overrides_weights_only_false_and_restores_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    torch.save(Payload(), tmp_path / "pickled.pt")
    UNPICKLED.clear()
    with tensors_only_loads(), pytest.raises(Exception, match="GLOBAL"):
        torch.load(tmp_path / "pickled.pt", weights_only=False)
    assert not UNPICKLED
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_two_loads_of_one_uncached_model_at_once_train_it_once_and_both_get_it(tmp_path: Path) -> None:
    """A sweep's jobs or parallel tests asking for the same model: the second waits and loads the first's."""
    import threading
    import time

    from preempt.checkpoints import load_or_train

    trained, models = [], []

    def train() -> tuple[torch.nn.Module, dict]:
        trained.append(threading.get_ident())
        time.sleep(0.3)  # long enough for the other load to arrive while this one trains
        return torch.nn.Linear(3, 2), {"width": 3}

    def load() -> None:
        build = lambda saved: torch.nn.Linear(saved["width"], 2)  # noqa: E731
        models.append(load_or_train(tmp_path / "model.pt", {"recipe": 1}, build, train))

    loads = [threading.Thread(target=load) for _ in range(2)]
    for thread in loads:
        thread.start()
    for thread in loads:
        thread.join()
    assert len(trained) == 1 and len(models) == 2
    assert torch.equal(models[0].weight, models[1].weight)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_naming_the_file_the_first_key_and_the_count(tmp_path: Path, bad: float) -> None:
    weights = _weights()
    weights["w"][3, :2] = bad
    path = tmp_path / "diverged.pt"
    torch.save({"epoch": torch.tensor(7), "state_dict": weights}, path)
    message = _error(path)
    assert "holds non-finite weights: state_dict.w has 2 NaN or inf values (of 1000)" in message
    assert "Retrain the model, or export its weights again" in message and f"replace {path}" in message


def test_non_finite_tensors_in_lists_are_found_and_integer_tensors_are_not_checked(tmp_path: Path) -> None:
    path = tmp_path / "ema.pt"
    shadow = [torch.ones(3), torch.tensor([1.0, float("nan")])]
    torch.save({"step": torch.tensor(3), "ema": {"shadow_params": shadow}}, path)
    assert "ema.shadow_params[1] has 1 NaN or inf values (of 2)" in _error(path)
    torch.save({"step": torch.tensor(3), "ema": {"shadow_params": shadow[:1]}}, path)
    assert load_checkpoint(path)["step"] == 3


def test_an_a5_robustifier_with_nan_weights_is_refused_at_validation(compose_config, tmp_path: Path) -> None:
    """Loaded, it ran to the end: protected accuracy 0, SSIM nan, no sanity flag, exit 0."""
    from preempt.defenses.a5 import Robustifier
    from preempt.parts import ConfigError
    from preempt.validation import validate_config

    robustifier = Robustifier(1, width=4)
    with torch.no_grad():
        robustifier.convolutional_dnn[2].bias.fill_(float("nan"))
    path = tmp_path / "robustifier_best"
    torch.save({"state_dict": robustifier.state_dict()}, path)
    cfg = compose_config("defense=a5", f"defense.checkpoint={path}", "defense.width=4", "attack=none")
    with pytest.raises(ConfigError, match=re.escape(f"defense: checkpoint {path} holds non-finite weights: ")):
        validate_config(cfg)


def test_a_folder_a_device_or_a_fifo_is_refused_saying_what_it_is_before_reading(tmp_path: Path) -> None:
    """Not "does not exist" for a folder, and no endless read of /dev/zero or wait on a FIFO."""
    os.mkfifo(tmp_path / "pipe.pt")
    assert "is a folder, not a regular file. Point it at the weight file itself" in _error(tmp_path)
    assert "is a character device, not a regular file" in _error(Path("/dev/zero"))
    assert "is a FIFO (named pipe), not a regular file" in _error(tmp_path / "pipe.pt")


def test_a_training_that_diverges_is_refused_and_nothing_is_saved(tmp_path: Path) -> None:
    from preempt.checkpoints import load_or_train

    def diverged() -> tuple[torch.nn.Module, dict]:
        model = torch.nn.Linear(3, 2)
        with torch.no_grad():
            model.weight[0, 0] = float("inf")
        return model, {}

    with pytest.raises(CheckpointError, match=f"the model trained for {tmp_path / 'model.pt'} holds non-finite"):
        load_or_train(tmp_path / "model.pt", {"recipe": 1}, lambda saved: torch.nn.Linear(3, 2), diverged)
    assert not (tmp_path / "model.pt").exists()


def test_a_cached_model_with_nan_weights_is_retrained_not_loaded(tmp_path: Path) -> None:
    from preempt.checkpoints import load_or_train, save_with_checksum

    recipe, path = {"recipe": 1}, tmp_path / "model.pt"
    cached = torch.nn.Linear(3, 2)
    with torch.no_grad():
        cached.bias.fill_(float("nan"))
    save_with_checksum(cached.state_dict(), path, {"recipe": recipe})
    retrained = load_or_train(path, recipe, lambda saved: torch.nn.Linear(3, 2), lambda: (torch.nn.Linear(3, 2), {}))
    assert torch.isfinite(retrained.bias).all()
