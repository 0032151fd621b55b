"""One binding shape: a part is given exactly the models its class declares, once, from where a run has them."""

import functools

import pytest
import torch
from conftest import TEST_SCORE_MODEL
from hydra.utils import instantiate

from preempt.assembly import Assembly, OnDemand, SharedModels, bind, settings_of
from preempt.attacks.adaptive import AdaptiveAttack
from preempt.attacks.pgd import PGD
from preempt.datasets.digits import digits
from preempt.defenses.fast_preemption import FastPreemption
from preempt.parts import ConfigError, Defense
from preempt.receiver_defenses import ReceiverDefended
from preempt.reversions.preemptive_reversion import PreemptiveReversion
from preempt.speed import AcceleratedBackbone


class Recorded(Defense):
    """A defense that takes a backbone and an optional extra model, for the binding's bookkeeping."""

    bound = ("backbone", "helper")

    def __init__(self, scale: float = 1.0, backbone=None, helper=None) -> None:
        self.scale, self.backbone, self.helper = scale, backbone, helper

    def __call__(self, x, labels):
        return x


def test_settings_are_the_factorys_keywords_over_the_constructors_defaults() -> None:
    assert settings_of(functools.partial(Recorded, scale=2.0)) == {"scale": 2.0, "backbone": None, "helper": None}


def test_a_part_gets_what_it_declares_and_an_on_demand_model_only_if_it_asks() -> None:
    made = []
    backbone = torch.nn.Identity()
    available = {"backbone": backbone, "helper": OnDemand(lambda settings: made.append(settings) or "helper")}
    part = bind(functools.partial(Recorded, scale=3.0), available)
    assert part.backbone is backbone and part.helper == "helper" and made[0]["scale"] == 3.0
    # A model its settings give already is not given again.
    given = bind(functools.partial(Recorded, helper="own"), available)
    assert given.helper == "own" and len(made) == 1


def test_a_declared_model_nothing_provides_is_an_error_naming_both() -> None:
    with pytest.raises(TypeError, match=r"Recorded asks for helper, which is not given here \(given: backbone\)"):
        bind(functools.partial(Recorded), {"backbone": torch.nn.Identity()})


def test_a_conditional_need_is_the_class_s_own_declaration() -> None:
    """BPDA asks for its learned approximator only with approximation=learned; the training never runs otherwise."""
    never = OnDemand(lambda settings: pytest.fail("trained an approximator nobody asked for"))
    plain = bind(functools.partial(AdaptiveAttack, eps=0.1), {"model": torch.nn.Identity(), "approximator": never})
    assert plain.approximator is None
    learned = functools.partial(AdaptiveAttack, eps=0.1, approximation="learned")
    approximator = torch.nn.Identity()
    assert bind(learned, {"model": None, "approximator": approximator}).approximator is approximator


def test_identical_model_configs_share_one_instance(compose_config) -> None:
    cfg = compose_config("classifier=digits_mlp", "backbone=digits_mlp", "victim=digits_cnn")
    shared = SharedModels()
    assert shared.build(cfg.classifier) is shared.build(cfg.backbone)
    assert shared.build(cfg.classifier) is not shared.build(cfg.victim)


@pytest.mark.parametrize("oblivious", [False, True])
def test_the_attack_sees_victim_after_g_unless_the_attacker_is_oblivious(
    oblivious: bool, compose_config, digits_models
) -> None:
    cfg = compose_config("receiver_defense=random_crop", "attack=pgd", f"threat.oblivious={oblivious}")
    module = Assembly(cfg).evaluation(digits(n_samples=4))
    assert isinstance(module.receiver, ReceiverDefended) and module.receiver.victim is module.victim
    attacked = module.attack.model
    if oblivious:
        assert attacked is module.victim
    else:
        assert isinstance(attacked, ReceiverDefended) and attacked.victim is module.victim
        assert attacked.transform is module.receiver_defense


def test_the_defense_is_bound_once_to_the_backbone_as_the_speed_options_run_it(compose_config, digits_models) -> None:
    cfg = compose_config("speed.channels_last=true", "attack=none")
    module = Assembly(cfg).evaluation(digits(n_samples=4))
    assert isinstance(module.defense, FastPreemption) and isinstance(module.defense.backbone, AcceleratedBackbone)
    assert module.defense.backbone.name == digits_models["digits_cnn_at"].name
    assert module.victim.name == digits_models["digits_lenet_at"].name  # the victim is scored in fp32 as it is


@pytest.mark.parametrize("option", ["preemptive_reversion", "preemptive_reversion_black_box"])
def test_preemptive_reversion_re_runs_the_defense_on_the_attackers_backbone(option, compose_config, digits_models):
    cfg = compose_config(f"reversion={option}", "attack=none")
    module = Assembly(cfg).evaluation(digits(n_samples=4))
    reversion = module.reversion
    assert isinstance(reversion, PreemptiveReversion) and isinstance(reversion.secondary_defense, FastPreemption)
    expected = "digits_lenet_at" if option.endswith("black_box") else "digits_cnn_at"  # the victim, or the sender's
    assert reversion.secondary_defense.backbone.name == digits_models[expected].name
    assert reversion.knowledge == ("black-box" if option.endswith("black_box") else "white-box")
    x, y, index = (tensor[:2] for tensor in (digits(n_samples=2).images, digits(n_samples=2).labels, torch.arange(2)))
    assert reversion.labeler(x, y, index).shape == (2,)


def test_a_receiver_and_a_reversion_that_purify_share_one_score_model(
    compose_config, digits_models, digits_score_model
) -> None:
    cfg = compose_config("receiver_defense=diffpure", "reversion=diffpure", "attack=none", *TEST_SCORE_MODEL)
    module = Assembly(cfg).evaluation(digits(n_samples=4))
    assert module.receiver_defense.score_model is module.reversion.score_model is not None


def test_a_part_that_cannot_take_the_images_is_refused_once_bound(compose_config, digits_score_model) -> None:
    cfg = compose_config("receiver_defense=diffpure", *TEST_SCORE_MODEL)
    with pytest.raises(ConfigError, match=r"receiver_defense=\w+: score model \w+ denoises 1-channel images"):
        Assembly(cfg).receiver_defense((3, 32, 32))


def test_an_attack_factory_is_bound_to_the_model_it_attacks(compose_config) -> None:
    victim = torch.nn.Identity()
    attack = Assembly(compose_config("attack=pgd")).attack(victim)
    assert isinstance(attack, PGD) and attack.model is victim
    assert bind(instantiate(compose_config("attack=pgd").attack), {"model": victim}).model is victim
