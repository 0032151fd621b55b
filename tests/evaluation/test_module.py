"""The test loop: 8-bit transmission of protected images, scored both ways."""

import json
import time
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from preempt.assembly import bind
from preempt.commands.evaluate import evaluate
from preempt.evaluation.metrics import converged_step
from preempt.evaluation.module import PreemptiveEvaluation
from preempt.parts import NoDefense, Reversion
from preempt.threat import to_8bit


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
    results = evaluate(cfg)
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
    """The test loop on real digits with no sender-side defense (`attack` a factory, bound to the victim here);
    returns the logged metrics."""
    import lightning as L

    from preempt.datasets.digits import digits
    from preempt.evaluation import EvaluationDataModule

    mlp = digits_models["digits_mlp"]
    module = PreemptiveEvaluation(mlp, victim, NoDefense(), bind(attack, {"model": victim}), num_classes=10)
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
    from preempt import assembly
    from preempt.zoo.approximators import train_approximator

    requested = []

    def tiny_approximator(transform_config, dataset_config, cache_dir):
        requested.append((transform_config["_target_"], dataset_config["_target_"], cache_dir))
        transform = instantiate(transform_config)
        images = instantiate(dataset_config).images[:32]
        return train_approximator(transform, images, layers=2, growth=4, steps=3, batch_size=16, lr=1e-2, seed=0)

    monkeypatch.setattr(assembly, "load_or_train_approximator", tiny_approximator)
    cfg = compose_config(
        "defense=none", "receiver_defense=bit_depth", "attack=bpda", "attack.approximation=learned",
        "attack.steps=2", "dataset.n_samples=8", "logger=none",
    )  # fmt: skip
    results = evaluate(cfg)
    assert requested == [("preempt.receiver_defenses.bit_depth.BitDepth", cfg.dataset._target_, cfg.paths.cache_dir)]
    assert results["run"]["attack"] == "BPDA (learned g′) targeted"
    assert results["rounds"]["round"] == [1, 2]
    assert 0 < results["metrics"]["test/approximation_ssim"] <= 1 and results["metrics"]["test/approximation_rms"] > 0


class _AsModule(torch.nn.Module):
    """A stand-in approximator g′ that is g itself (a perfect approximation)."""

    def __init__(self, transform) -> None:
        super().__init__()
        self.transform = transform

    def forward(self, x):
        return self.transform.transform(x)


def test_a_learned_approximation_is_scored_against_g_on_the_sent_images(digits_models) -> None:
    """g′(x) against g(x) as Table 1's change is measured: a perfect g′ scores 0 and 1, the identity scores exactly
    what g changes; an approximation that is not learned adds nothing."""
    import lightning as L

    from preempt.attacks.adaptive import AdaptiveAttack
    from preempt.datasets.digits import digits
    from preempt.evaluation import EvaluationDataModule
    from preempt.receiver_defenses import ReceiverDefended
    from preempt.receiver_defenses.bit_depth import BitDepth

    victim, g = digits_models["digits_mlp"], BitDepth(bits=2)
    metrics = {}
    for name, approximation, approximator in (
        ("perfect", "learned", _AsModule(g)),
        ("identity", "learned", torch.nn.Identity()),
        ("not learned", "identity", None),
    ):
        attack = AdaptiveAttack(ReceiverDefended(victim, g), eps=0.05, steps=1, approximation=approximation,
                                approximator=approximator)  # fmt: skip
        module = PreemptiveEvaluation(victim, victim, NoDefense(), attack, num_classes=10, receiver_defense=g)
        trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, inference_mode=False)
        trainer.test(module, datamodule=EvaluationDataModule(digits(n_samples=16), batch_size=8), verbose=False)
        metrics[name] = {key: float(value) for key, value in trainer.callback_metrics.items()}
    perfect, identity = metrics["perfect"], metrics["identity"]
    assert perfect["test/approximation_rms"] == 0 and perfect["test/approximation_ssim"] == pytest.approx(1)
    assert identity["test/approximation_rms"] == pytest.approx(identity["test/receiver_change_rms"])
    assert identity["test/approximation_ssim"] == pytest.approx(identity["test/receiver_change_ssim"])
    assert identity["test/approximation_rms"] > 0 and identity["test/approximation_ssim"] < 1
    assert "test/approximation_rms" not in metrics["not learned"]


def test_untargeted_success_is_the_complement_of_robust_accuracy_even_for_a_random_receiver(compose_config) -> None:
    """Both are scored from one prediction of the attacked images: one draw of a random g, not two."""
    cfg = compose_config(
        "defense=none", "receiver_defense=random_resize_pad", "attack=pgd", "attack.steps=2", "dataset.n_samples=32",
        "logger=none",
    )  # fmt: skip
    metrics = evaluate(cfg)["metrics"]
    assert metrics["test/attack_success_rate"] == pytest.approx(1 - metrics["test/robust_acc"])


def test_ground_truth_cannot_be_the_victim(digits_models) -> None:
    from preempt.attacks.base import NoAttack
    from preempt.models import GroundTruth

    with pytest.raises(TypeError, match="ground_truth, noisy_labels\\) can only be the classifier"):
        PreemptiveEvaluation(
            classifier=GroundTruth(), victim=GroundTruth(), defense=NoDefense(), attack=NoAttack(None), num_classes=10
        )


def test_every_model_a_part_holds_moves_with_the_module(digits_models) -> None:
    """The defense's backbone, the attack's model and Bi-Level's inner attack's are registered, so Lightning moves
    them to the device with the module (a model only a part held once stayed on the CPU)."""
    from preempt.attacks.pgd import PGD
    from preempt.defenses.bilevel import BiLevel

    backbone, victim = digits_models["digits_cnn_at"], digits_models["digits_lenet_at"]
    defense = BiLevel(backbone=backbone, eps=0.1, iterations=1, inner_steps=1)
    module = PreemptiveEvaluation(victim, victim, defense, PGD(victim, eps=0.1), num_classes=10)
    registered = module._modules  # every name, also of a module registered twice (named_children lists it once)
    assert registered["defense_backbone"] is backbone and registered["defense_inner_attack_model"] is backbone
    assert registered["attack_model"] is victim and registered["victim"] is victim


class _SlowToPrepare(NoDefense):
    """Sends images unchanged, after a one-off preparation of 0.3 s (as a chunk timing would take)."""

    def __init__(self) -> None:
        self.prepared_with_gradients: list[bool] = []

    def prepare(self, x: torch.Tensor) -> None:
        self.prepared_with_gradients.append(torch.is_grad_enabled())
        time.sleep(0.3)


def test_the_defense_is_prepared_with_gradients_and_its_preparation_is_not_its_time(digits_models) -> None:
    from preempt.attacks.base import NoAttack

    victim, defense = digits_models["digits_lenet_at"], _SlowToPrepare()
    module = PreemptiveEvaluation(victim, victim, defense, NoAttack(None), num_classes=10)
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        protected, seconds = module.protect(x, torch.zeros(4, dtype=torch.long))
    assert torch.equal(protected, x) and defense.prepared_with_gradients == [True]
    assert seconds < 0.3


def test_an_attack_until_the_bound_logs_the_rounds_its_images_ran(digits_models) -> None:
    import functools

    from preempt.attacks.adaptive import AdaptiveAttack

    attack = functools.partial(
        AdaptiveAttack, eps=0.3, norm="normalized_L2", steps=40, step_size=0.05, until_bound=True, record_every=10
    )
    metrics, module = _evaluate(digits_models["digits_mlp"], attack, digits_models)
    assert 1 <= metrics["test/attack_rounds"] < 40
    assert module.rounds["round"] == [10, 20, 30, 40]  # the planned rounds, whenever each batch ended
    capped, _ = _evaluate(digits_models["digits_mlp"], functools.partial(attack, until_bound=False), digits_models)
    assert "test/attack_rounds" not in capped


# Figure 8's per-step curve: 16 digits in two batches, Fast Preemption's 3 steps with N 4, PGD-3: a run in seconds.
STEPS_RUN = (
    "dataset.n_samples=16", "batch_size=8", "defense.n_samples=4", "attack=pgd", "attack.steps=3", "logger=none"
)  # fmt: skip


def test_every_kept_step_is_scored_and_the_last_is_the_runs_own_numbers(compose_config, tmp_path: Path) -> None:
    """With a deterministic attack (PGD from the image itself) the last step's accuracies are the run's; the curve
    is in results.json, and the cache is bypassed (it holds no iterates)."""
    cfg = compose_config(
        *STEPS_RUN, "attack.random_start=false", "defense.record_every=2", "protection_cache=true",
        f"paths.protected_dir={tmp_path / 'protected'}",
    )  # fmt: skip
    results = evaluate(cfg)
    steps, metrics = results["steps"], results["metrics"]
    assert steps["step"] == [2, 3]
    assert steps["protected_clean_acc"][-1] == pytest.approx(metrics["test/protected_clean_acc"])
    assert steps["robust_acc"][-1] == pytest.approx(metrics["test/robust_acc"])
    assert all(0 <= value <= 1 for value in steps["protected_clean_acc"] + steps["robust_acc"])
    assert json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())["steps"] == steps
    assert metrics["test/protection_cache_hit"] == 0 and not list((tmp_path / "protected").rglob("*.pt"))
    assert metrics["test/steps_to_converge"] == converged_step(steps["step"], steps["robust_acc"])


def test_scoring_the_steps_changes_none_of_the_runs_numbers(compose_config, tmp_path: Path) -> None:
    """The iterates are attacked after everything else in the batch: a random-start attack draws the same starts."""
    recorded = evaluate(compose_config(*STEPS_RUN, "defense.record_every=1"))
    cfg = compose_config(*STEPS_RUN)
    cfg.paths.output_dir = str(tmp_path / "plain")
    plain = evaluate(cfg)
    assert recorded["steps"]["step"] == [1, 2, 3] and plain["steps"] is None
    assert recorded["metrics"].pop("test/steps_to_converge") in (1, 2, 3)
    assert without_timings(recorded["metrics"]) == without_timings(plain["metrics"])


class _NaNInOddImages(NoDefense):
    """Sends every other image with a NaN pixel, as a defense with NaN weights (or a step that overflows) would."""

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        sent = x.clone()
        sent[1::2, :, 0, 0] = float("nan")
        return sent


class _InfiniteReversion(Reversion):
    def __call__(self, protected: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return protected + float("inf")


class _NaNGradients(torch.nn.Module):
    """A victim with finite outputs and NaN input gradients: an attack's steps along them make NaN images."""

    def __init__(self, victim: torch.nn.Module) -> None:
        super().__init__()
        self.victim = victim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            x.register_hook(lambda gradient: torch.full_like(gradient, float("nan")))
        return self.victim(x)


def _run_on_digits(victim, defense, attack, reversion=None, protection_cache=None) -> dict[str, float]:
    """The test loop on 16 real digits in one batch (`attack` bound to the victim); returns the logged metrics."""
    import lightning as L

    from preempt.datasets.digits import digits
    from preempt.evaluation import EvaluationDataModule

    module = PreemptiveEvaluation(
        victim, victim, defense, bind(attack, {"model": victim}), num_classes=10, reversion=reversion,
        protection_cache=protection_cache,
    )  # fmt: skip
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, inference_mode=False)
    trainer.test(module, datamodule=EvaluationDataModule(digits(n_samples=16), batch_size=16), verbose=False)
    return {key: float(value) for key, value in trainer.callback_metrics.items()}


def test_nan_protected_images_stop_the_run_naming_the_defense_and_samples_and_are_not_cached(
    digits_models, tmp_path: Path
) -> None:
    """Scored, they gave a protected accuracy of 0, an SSIM of nan and no flag, and the run exited 0."""
    import functools

    from preempt.attacks.base import NoAttack
    from preempt.evaluation.protection_cache import ProtectionCache
    from preempt.evaluation.sanity import NonFiniteImagesError

    victim, cache = digits_models["digits_mlp"], ProtectionCache(tmp_path, "fingerprint")
    finished = _run_on_digits(victim, NoDefense(), functools.partial(NoAttack))
    assert finished["test/check_non_finite_images"] == 0  # a finished run records the check, unfired
    with pytest.raises(NonFiniteImagesError) as info:
        _run_on_digits(victim, _NaNInOddImages(), functools.partial(NoAttack), protection_cache=cache)
    message = str(info.value)
    assert message.startswith("sanity check non_finite_images fired: 8 of the 16 protected images of the batch from ")
    assert "(samples 1, 3, 5, 7, 9, ...)" in message and "Check the defense that made them" in message
    assert not list(tmp_path.rglob("*.pt")), "a NaN protection was cached for the next run to reuse"


def test_non_finite_reverted_or_adversarial_images_stop_the_run_naming_the_part(digits_models) -> None:
    import functools

    from preempt.attacks.base import NoAttack
    from preempt.attacks.pgd import PGD
    from preempt.evaluation.sanity import NonFiniteImagesError

    victim = digits_models["digits_mlp"]
    with pytest.raises(NonFiniteImagesError, match=r"16 of the 16 reverted images .* Check the reversion that"):
        _run_on_digits(victim, NoDefense(), functools.partial(NoAttack), reversion=_InfiniteReversion())
    attack = functools.partial(PGD, eps=1.0, norm="L2", steps=1)  # Linf would step along sign(NaN) = 0
    with pytest.raises(NonFiniteImagesError, match=r"16 of the 16 adversarial images .* Check the attack that"):
        _run_on_digits(_NaNGradients(victim), NoDefense(), attack)
