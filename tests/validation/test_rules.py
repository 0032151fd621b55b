"""The whole composed config is checked before any model is built; every refusal names the key and the fix."""

import time
from pathlib import Path

import pytest
from conftest import ROOT, TRANSFORMS, option_node, refusal
from hydra.utils import instantiate

from preempt.commands.evaluate import evaluate
from preempt.parts import ConfigError
from preempt.validation import validate_config


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("threat.eps=8", "8/255"),
        ("batch_size=abc", "batch_size='abc'"),
        ("+defence=none", "Did you mean defense?"),
        ("defense.eta=7", "defense.eta=7"),
        ("+defense.etaa=0.5", "Did you mean eta?"),
        ("defense.n_samples=0", "defense.n_samples=0"),
        ("attack=pgd", None),
        ("attack=autoattack", None),
        ("attack.version=plus", "attack.version='plus'"),
        ("threat.norm=L1", "threat.norm='L1'"),
        ("seed=-1", "seed=-1"),
        (
            "seed=99999999999999999999",
            "seed=99999999999999999999: Value error, a seed is an integer from 0 to 4294967295",
        ),
        ("seed=4294967296", "from 0 to 4294967295"),
        ("victim.architecture=resnet", "victim.architecture='resnet'"),
        ("backbone=ground_truth", "can only be the classifier"),
        ("victim=ground_truth", "can only be the classifier"),
        ("defense.forward_steps=0 defense.backward_steps=0", "defense=none"),
        ("defense.random_start=false", "set n_samples=1"),
        ("defense.record_every=0", "defense.record_every=0"),
        ("defense=bilevel_fp defense.record_every=10", None),
    ],
)
def test_bad_settings_are_refused_before_any_model_is_built(
    override: str, expected: str | None, compose_config, no_model_building
) -> None:
    cfg = compose_config(*override.split())
    if expected is None:  # a valid config reaches model building, which the fixture stops
        with pytest.raises(AssertionError, match="models were built"):
            evaluate(cfg)
        return
    start = time.perf_counter()
    assert expected in refusal(cfg)
    assert time.perf_counter() - start < 10


def test_eps_written_as_a_fraction_is_read_as_one(compose_config) -> None:
    cfg = compose_config("threat.eps=8/255")
    validate_config(cfg)
    assert cfg.threat.eps == pytest.approx(8 / 255)
    assert cfg.defense.eps == pytest.approx(8 / 255) and cfg.attack.eps == pytest.approx(8 / 255)


def test_an_empty_model_cache_is_not_trained_for_a_refused_config(compose_config, tmp_path: Path) -> None:
    cache = tmp_path / "empty_cache"
    cfg = compose_config("threat.eps=8", f"paths.cache_dir={cache}")
    start = time.perf_counter()
    assert "8/255" in refusal(cfg)
    assert time.perf_counter() - start < 10
    assert not cache.exists() or not any(cache.iterdir())


def test_channels_outside_one_or_three_name_the_key(compose_config, tmp_path: Path) -> None:
    cfg = compose_config("dataset=folder", f"dataset.root={tmp_path}", "dataset.channels=4")
    with pytest.raises(ConfigError, match=r"dataset\.channels=4"):
        validate_config(cfg)


def test_a_required_key_left_unset_is_named(compose_config) -> None:
    with pytest.raises(ConfigError, match=r"dataset\.root must be set"):
        validate_config(compose_config("dataset=folder"))


def test_paper_condition_on_eta_is_a_warning_not_an_error(compose_config) -> None:
    assert validate_config(compose_config()) == []
    (warning,) = validate_config(compose_config("defense.forward_steps=0", "defense.backward_steps=1"))
    assert "eta·(forward_steps+backward_steps) = 0.70" in warning


def test_evaluating_on_the_zoo_training_split_is_flagged(compose_config) -> None:
    (warning,) = validate_config(compose_config("dataset.split=train"))
    assert "trained on these images" in warning and "dataset.split=test" in warning


def test_files_a_folder_dataset_will_not_use_are_named_by_validation_before_any_work(compose_config, tmp_path) -> None:
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "0_3.png")
    (tmp_path / "cat.png").write_bytes(b"")
    (warning,) = validate_config(compose_config("dataset=folder", f"dataset.root={tmp_path}"))
    assert "uses 1 of its 2 entries" in warning and "cat.png" in warning
    (tmp_path / "0_-1.png").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"0_-1\.png"):
        validate_config(compose_config("dataset=folder", f"dataset.root={tmp_path}"))


# An option's own instance says it (pixel deflection without its denoiser is differentiable, its class is not).
DIFFERENTIABLE = {name for name in TRANSFORMS if instantiate(option_node("receiver_defense", name)).differentiable}


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
    cfg = compose_config("receiver_defense._target_=preempt.parts.NoDefense", "attack=none")
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
