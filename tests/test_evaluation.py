"""The test loop: 8-bit transmission of protected images, scored both ways."""

import json
from pathlib import Path

import pytest
import torch

from preempt import run
from preempt.evaluation.module import PreemptiveEvaluation, to_8bit


def test_8bit_rounding_lands_on_the_png_grid_within_half_a_level() -> None:
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    sent = to_8bit(x)
    assert torch.equal(sent * 255, torch.round(sent * 255))
    assert (sent - x).abs().max() <= 0.5 / 255 + 1e-12
    assert sent.min() >= 0 and sent.max() <= 1


@pytest.mark.parametrize("transmit_8bit", [True, False])
def test_transmission_sends_8bit_images_and_reports_accuracy_both_ways(
    transmit_8bit: bool, compose_config, digits_models, monkeypatch: pytest.MonkeyPatch
) -> None:
    attacked: list[torch.Tensor] = []
    original = PreemptiveEvaluation.run_attack

    def recording(self, x, y, target=None, start=None):
        attacked.append(x.clone())
        return original(self, x, y, target, start)

    monkeypatch.setattr(PreemptiveEvaluation, "run_attack", recording)
    cfg = compose_config(f"transmit_8bit={transmit_8bit}", "attack=pgd", "dataset.n_samples=16", "logger=none")
    results = run.evaluate(cfg)
    metrics = results["metrics"]

    on_grid = [torch.equal(x * 255, torch.round(x * 255)) for x in attacked]
    if transmit_8bit:
        assert on_grid == [True, False]  # the sent (8-bit) images, then the unrounded protection
        assert {"test/robust_acc_float", "test/protected_clean_acc_float"} <= metrics.keys()
        assert metrics["test/linf"] <= 0.2 + 0.5 / 255 + 1e-6  # rounding may add half a level
    else:
        assert on_grid == [False]
        assert "test/robust_acc_float" not in metrics
    saved = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert saved["config"]["transmit_8bit"] is transmit_8bit and saved["metrics"] == metrics


def _evaluate(victim: torch.nn.Module, attack, digits_models, n_samples: int = 32) -> dict[str, float]:
    """The test loop on real digits with no sender-side defense; returns the logged metrics."""
    import functools

    import lightning as L

    from preempt.datasets.digits import digits
    from preempt.defenses.base import NoDefense
    from preempt.evaluation import EvaluationDataModule

    mlp = digits_models["digits_mlp"]
    module = PreemptiveEvaluation(mlp, mlp, victim, functools.partial(NoDefense), attack, num_classes=10)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, inference_mode=False)
    trainer.test(module, datamodule=EvaluationDataModule(digits(n_samples=n_samples), batch_size=16), verbose=False)
    return {key: float(value) for key, value in trainer.callback_metrics.items()}, module


class _RoundedInput(torch.nn.Module):
    """A victim behind input rounding whose input gradient is exactly zero (masked gradients, as a careless
    implementation of a quantizing defense would give)."""

    def __init__(self, victim: torch.nn.Module) -> None:
        super().__init__()
        self.victim = victim

    def forward(self, x):
        return self.victim(torch.round(x * 4) / 4 + 0 * x)


def test_masked_gradients_raise_autoattacks_zero_gradient_flag(digits_models) -> None:
    import functools

    from preempt.attacks.pgd import PGD

    attack = functools.partial(PGD, eps=0.2, norm="Linf", steps=5)
    masked, _ = _evaluate(_RoundedInput(digits_models["digits_mlp"]), attack, digits_models)
    plain, _ = _evaluate(digits_models["digits_mlp"], attack, digits_models)
    assert masked["test/check_zero_gradients"] == 1 and plain["test/check_zero_gradients"] == 0
    assert masked["test/robust_acc"] > plain["test/robust_acc"] + 0.3  # the "win" the flag makes visible
    assert plain["test/check_randomized"] == plain["test/check_probability_output"] == 0


def test_targeted_attack_reports_success_and_per_round_curves(digits_models) -> None:
    import functools

    from preempt.attacks.pgd import PGD

    attack = functools.partial(PGD, eps=0.3, norm="Linf", steps=4, targeted=True, early_stop=True, record_every=2)
    metrics, module = _evaluate(digits_models["digits_mlp"], attack, digits_models)
    assert module.rounds["round"] == [2, 4]
    assert module.rounds["attack_success_rate"][-1] == pytest.approx(metrics["test/attack_success_rate"])
    assert 0.5 <= metrics["test/attack_success_rate"] <= 1 - metrics["test/robust_acc"] + 1e-9
    again, _ = _evaluate(digits_models["digits_mlp"], attack, digits_models)
    assert without_timings(again) == without_timings(metrics)  # targets are drawn from the batch's seed


def without_timings(metrics: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in metrics.items() if not key.endswith("_seconds_per_image")}


def test_learned_bpda_gets_the_cached_approximator_of_the_receivers_transform(
    compose_config, digits_models, monkeypatch: pytest.MonkeyPatch
) -> None:
    from preempt.attacks import approximator as approximators

    requested = []

    def tiny_approximator(transform_config, dataset_config, cache_dir):
        requested.append((transform_config["_target_"], dataset_config["_target_"], cache_dir))
        transform = run.instantiate(transform_config)
        images = run.instantiate(dataset_config).images[:32]
        return approximators.train_approximator(
            transform, images, layers=2, growth=4, steps=3, batch_size=16, lr=1e-2, seed=0
        )

    monkeypatch.setattr(approximators, "load_or_train_approximator", tiny_approximator)
    cfg = compose_config(
        "defense=none", "receiver_defense=bit_depth", "attack=bpda", "attack.approximation=learned",
        "attack.steps=2", "dataset.n_samples=8", "logger=none",
    )  # fmt: skip
    results = run.evaluate(cfg)
    assert requested == [("preempt.receiver_defenses.bit_depth.BitDepth", cfg.dataset._target_, cfg.paths.cache_dir)]
    assert results["run"]["attack"] == "BPDA (learned g′) targeted"
    assert results["rounds"]["round"] == [1, 2]


def test_untargeted_success_is_the_complement_of_robust_accuracy_even_for_a_random_receiver(compose_config) -> None:
    """Both are scored from one prediction of the attacked images: one draw of a random g, not two."""
    cfg = compose_config(
        "defense=none", "receiver_defense=random_resize_pad", "attack=pgd", "attack.steps=2", "dataset.n_samples=32",
        "logger=none",
    )  # fmt: skip
    metrics = run.evaluate(cfg)["metrics"]
    assert metrics["test/attack_success_rate"] == pytest.approx(1 - metrics["test/robust_acc"])
