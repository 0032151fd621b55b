"""Receiver-side placement: victim∘g in the loop, the refusal that names BPDA, output variance, and every
transform end to end through src/main.py."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TRANSFORMS, main_command
from hydra.utils import instantiate

from preempt import run
from preempt.evaluation.module import PreemptiveEvaluation
from preempt.receiver_defenses import Identity, NonDifferentiableTransformError, ReceiverDefended
from preempt.receiver_defenses.bit_depth import BitDepth
from preempt.receiver_defenses.random_resize_pad import RandomResizePad
from preempt.results import format_table
from preempt.validation import ConfigError, validate_config

DIFFERENTIABLE = {"random_resize_pad", "random_crop"}


@pytest.mark.parametrize("option", TRANSFORMS)
def test_a_gradient_attack_through_a_non_differentiable_transform_is_refused_naming_bpda(
    option: str, compose_config
) -> None:
    cfg = compose_config(f"receiver_defense={option}", "attack=pgd")
    if option in DIFFERENTIABLE:
        assert validate_config(cfg) == []
        return
    # Outside a Hydra run the option is named by its class (DCTDistortion); `src/main.py` names the option.
    with pytest.raises(ConfigError, match=r"receiver_defense=\w+ with attack=\w+: .*BPDA.*threat.oblivious=true"):
        validate_config(cfg)


def test_the_oblivious_attacker_and_attack_none_need_no_gradient_through_the_transform(compose_config) -> None:
    assert validate_config(compose_config("receiver_defense=jpeg", "attack=pgd", "threat.oblivious=true")) == []
    assert validate_config(compose_config("receiver_defense=jpeg", "attack=none")) == []
    warnings = validate_config(compose_config("threat.oblivious=true", "attack=pgd"))
    assert warnings == ["threat.oblivious=true changes nothing without a receiver_defense"]


@pytest.mark.parametrize("option", TRANSFORMS)
def test_bpda_attacks_every_transform_and_eot_alone_only_differentiable_ones(option: str, compose_config) -> None:
    assert validate_config(compose_config(f"receiver_defense={option}", "attack=bpda")) == []
    eot = compose_config(f"receiver_defense={option}", "attack=eot")
    if option in DIFFERENTIABLE:
        assert validate_config(eot) == []
        return
    with pytest.raises(ConfigError, match=r"attack=bpda"):
        validate_config(eot)


def test_eot_without_a_random_transform_to_average_is_a_warning(compose_config) -> None:
    (warning,) = validate_config(compose_config("attack=eot"))
    assert "attack.eot_samples=30" in warning and "attack.eot_samples=1" in warning


@pytest.mark.parametrize("setting", ["receiver_defense=none", "threat.oblivious=true"])
def test_a_learned_approximation_needs_a_transform_the_attacker_sees(setting: str, compose_config) -> None:
    cfg = compose_config("receiver_defense=jpeg", "attack=bpda", "attack.approximation=learned", setting)
    with pytest.raises(ConfigError, match=r"attack\.approximation=identity"):
        validate_config(cfg)


def test_a_sender_side_defense_in_the_receiver_group_is_refused(compose_config) -> None:
    cfg = compose_config("receiver_defense._target_=preempt.defenses.base.NoDefense", "attack=none")
    with pytest.raises(ConfigError, match=r"not an input transform g\(x\).* defense="):
        validate_config(cfg)


def test_a_missing_table_file_is_refused_before_any_work(compose_config, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "table.txt"
    cfg = compose_config("receiver_defense=dct_distortion", f"receiver_defense.table={missing}", "attack=none")
    with pytest.raises(ConfigError, match=rf"receiver_defense: quantization table {missing} does not exist"):
        validate_config(cfg)


def test_the_shipped_digits_table_is_read(compose_config) -> None:
    table = ROOT / "src/preempt/receiver_defenses/tables/digits.txt"
    cfg = compose_config("receiver_defense=dct_distortion", f"receiver_defense.table={table}", "attack=none")
    assert validate_config(cfg) == []
    transform = instantiate(cfg.receiver_defense)
    assert transform.table.shape == (8, 8) and transform.table.max() == 100 and transform.table.min() >= 20


def test_a_gradient_through_a_non_differentiable_transform_raises_instead_of_returning_zeros(digits_models) -> None:
    defended = ReceiverDefended(digits_models["digits_lenet_at"], BitDepth(bits=1))
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    with pytest.raises(NonDifferentiableTransformError, match="BPDA"):
        defended(x)
    with torch.no_grad():
        assert defended(x).shape == (2, 10)


def test_a_differentiable_transform_passes_gradients_to_the_input(digits_models) -> None:
    defended = ReceiverDefended(digits_models["digits_lenet_at"], RandomResizePad())
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    (grad,) = torch.autograd.grad(defended(x).sum(), x)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("oblivious", [False, True])
def test_the_attack_sees_victim_after_g_unless_the_attacker_is_oblivious(oblivious: bool, compose_config) -> None:
    cfg = compose_config("receiver_defense=random_crop", "attack=pgd", f"threat.oblivious={oblivious}")
    victim = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 10))
    module = PreemptiveEvaluation(
        classifier=victim,
        backbone=victim,
        victim=victim,
        defense=instantiate(cfg.defense),
        attack=instantiate(cfg.attack),
        num_classes=10,
        receiver_defense=instantiate(cfg.receiver_defense),
        oblivious=oblivious,
    )
    assert isinstance(module.receiver, ReceiverDefended) and module.receiver.victim is victim
    assert module.attack.model is (victim if oblivious else module.receiver)


def test_without_a_receiver_defense_the_victim_is_not_wrapped() -> None:
    victim = torch.nn.Linear(4, 2)
    module = PreemptiveEvaluation(victim, victim, victim, lambda backbone: None, lambda model: None, num_classes=2)
    assert module.receiver is victim and isinstance(module.receiver_defense, Identity)


def test_variance_is_measured_for_random_transforms_and_exact_for_deterministic_ones(
    compose_config, digits_models, tmp_path: Path
) -> None:
    metrics = {}
    for option in ("random_resize_pad", "jpeg"):
        cfg = compose_config(
            f"receiver_defense={option}", "defense=none", "attack=none", "dataset.n_samples=32", "logger=none"
        )
        cfg.paths.output_dir = str(tmp_path / option)
        metrics[option] = run.evaluate(cfg)["metrics"]
    random, fixed = metrics["random_resize_pad"], metrics["jpeg"]
    assert random["test/receiver_variance_l2"] > 0 and random["test/receiver_variance_ssim"] < 1
    assert fixed["test/receiver_variance_l2"] == 0 and fixed["test/receiver_variance_ssim"] == 1
    # No attack: robust accuracy is the receiver's accuracy on what was sent.
    assert fixed["test/robust_acc"] == fixed["test/protected_clean_acc"]


def test_the_table_names_both_defenses_and_marks_an_oblivious_attack() -> None:
    result = {
        "run": {
            "defense": "FastPreemption",
            "receiver_defense": "DCTDistortion",
            "attack": "PGD",
            "oblivious": True,
            "n_samples": 8,
        },
        "metrics": {"test/robust_acc": 0.5, "test/receiver_variance_l2": 0.3},
    }
    table = format_table([result])
    assert "| FastPreemption | DCTDistortion    | PGD (oblivious) | 8 " in table
    assert "receiver variance L2" in table.splitlines()[0] and "0.300" in table


@pytest.mark.slow
def test_every_transform_runs_receiver_side_through_main(tmp_path: Path, zoo_dir: Path, digits_models) -> None:
    """One multirun over every transform (oblivious PGD), then both sides at once, as a user would run them."""
    sweep = ",".join(TRANSFORMS)
    command = main_command(tmp_path / "unused", zoo_dir, f"receiver_defense={sweep}", "defense=none")
    command.insert(2, "-m")  # Hydra's flag goes before the overrides
    command += [f"hydra.sweep.dir={tmp_path / 'sweep'}", "attack=pgd", "threat.oblivious=true"]
    command += ["dataset.n_samples=16", "logger=none"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = [json.loads(path.read_text()) for path in sorted((tmp_path / "sweep").rglob("results.json"))]
    assert len(results) == len(TRANSFORMS)
    for result in results:
        option = result["config"]["receiver_defense"]["_target_"]
        metrics = result["metrics"]
        assert result["run"]["oblivious"] is True and result["run"]["defense"] == "NoDefense"
        assert 0 <= metrics["test/robust_acc"] <= 1 and 0 <= metrics["test/clean_acc"] <= 1, option
        assert metrics["test/receiver_variance_ssim"] <= 1, option

    both = main_command(tmp_path / "both", zoo_dir, "defense=fast_preemption", "receiver_defense=dct_distortion")
    both += ["attack=pgd", "threat.oblivious=true", "dataset.n_samples=16", "logger=none"]
    done = subprocess.run(both, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "both" / "results.json").read_text())
    assert (result["run"]["defense"], result["run"]["receiver_defense"]) == ("FastPreemption", "DCTDistortion")
    assert result["metrics"]["test/linf"] <= 0.2 + 1e-5 and result["metrics"]["test/receiver_variance_l2"] > 0
    assert "| FastPreemption | DCTDistortion    | PGD (oblivious) | 16" in done.stdout
