"""Every config file under conf/ composes, validates and instantiates; the options are discovered from the folders
and sorted by what their targets declare, so a new file is tested without editing this one."""

import inspect
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import CONF_DIR, ROOT, TRANSFORMS, instantiate_error, option_node, option_target
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from preempt.assembly import Assembly, bind
from preempt.attacks.base import Attack
from preempt.config import group_options
from preempt.datasets.base import ImageDataset
from preempt.datasets.cifar10 import DatasetNotFoundError
from preempt.models import GroundTruth, PixelClassifier
from preempt.models.robustbench import CheckpointNotFoundError, load_robustbench_model
from preempt.parts import ConfigError, Defense, InputTransform, LabelOnly, spec_of
from preempt.validation import validate_config

ROLE_GROUPS = ("classifier", "backbone", "victim")  # symlinks to conf/model: every model fills every role
DATASETS = group_options("dataset")
MODELS = group_options("model")
LABEL_ONLY = [name for name in MODELS if inspect.isclass(option_target("model", name))
              and issubclass(option_target("model", name), LabelOnly)]  # fmt: skip
ROBUSTBENCH_MODELS = [name for name in MODELS if option_target("model", name) is load_robustbench_model]
OFFLINE_MODELS = [name for name in MODELS if name not in ROBUSTBENCH_MODELS]
DEFENSES = group_options("defense")
# The sender-side defenses that need the backbone (every transform also serves on the sender's side).
PREEMPTIVE = [name for name in DEFENSES if option_target("defense", name).protects
              and not issubclass(option_target("defense", name), InputTransform)]  # fmt: skip
RECEIVER_DEFENSES = group_options("receiver_defense")
REVERSIONS = group_options("reversion")
SCORE_MODELS = group_options("score_model")
# The published score models: their weight file is not shipped (its name is the end of the option's checkpoint).
PUBLISHED_SCORE_MODELS = {
    name: Path(option_node("score_model", name).checkpoint).name
    for name in SCORE_MODELS
    if "checkpoint" in option_node("score_model", name)
}
ATTACKS = group_options("attack")
TRAINERS = group_options("trainer")
LOGGERS = group_options("logger")
EXPERIMENTS = group_options("experiment")
# Groups with options of their own that other tests cover: speed (tests/test_speed.py), scale (with every table's
# cells: tests/reproduce/test_tables.py), paths and hydra (in every composition), the launchers (test_launchers.py).
COVERED_ELSEWHERE = {"speed", "scale", "paths", "hydra"}


def user_settings(role: str, option: str, request: pytest.FixtureRequest) -> list[str]:
    """The overrides a user adds for what a model option leaves ??? (a timm architecture, a weight file), from the
    `own_model_files` fixture (built only for the options that need it)."""
    node = option_node("model", option)
    missing = [key for key in node if OmegaConf.is_missing(node, key)]
    files = request.getfixturevalue("own_model_files") if missing else {}
    return [f"{role}.{key}={files[key]}" for key in missing]


def attack_context(option: str) -> list[str]:
    """What an attack needs around it to run as shipped: a norm it takes (C&W and L-BFGS are L2 attacks), and a
    random receiver-side g to average when it averages draws (EOT)."""
    target, node = option_target("attack", option), option_node("attack", option)
    context = [] if "Linf" in target.norms else ["threat.norm=L2", "threat.eps=1.0"]
    return context + (["receiver_defense=random_resize_pad"] if node.get("eot_samples", 1) > 1 else [])


def test_discovery_sorts_the_options_by_what_their_targets_are() -> None:
    assert {"ground_truth", "noisy_labels"} <= set(LABEL_ONLY) and "digits_cnn" in OFFLINE_MODELS
    assert {"fast_preemption", "bilevel", "a5"} <= set(PREEMPTIVE) and not set(PREEMPTIVE) & set(TRANSFORMS)
    assert set(TRANSFORMS) < set(RECEIVER_DEFENSES)
    assert {"ddpmpp_cifar10", "guided_imagenet256"} == set(PUBLISHED_SCORE_MODELS)
    assert all(issubclass(option_target("defense", name), Defense) for name in DEFENSES)
    assert all(issubclass(option_target("attack", name), Attack) for name in ATTACKS)
    assert attack_context("cw") == ["threat.norm=L2", "threat.eps=1.0"]
    assert attack_context("bpda_eot") == ["receiver_defense=random_resize_pad"] and attack_context("pgd") == []


def test_every_config_file_is_a_tested_group_or_a_command_s_config() -> None:
    """Every folder of conf/ is a group tested here (or named above as tested elsewhere); every top-level file is
    a command's, whose test is tests/commands/test_<command>.py (main.yaml: the evaluation)."""
    groups = {path.relative_to(CONF_DIR).parts[0] for path in CONF_DIR.rglob("*.yaml") if path.parent != CONF_DIR}
    tested = {"dataset", "model", "defense", "receiver_defense", "reversion", "score_model", "attack"}  # roles: links
    tested |= {"trainer", "logger", "experiment"}
    assert groups == tested | COVERED_ELSEWHERE
    commands = {path.stem for path in CONF_DIR.glob("*.yaml")}
    tests = {path.stem.removeprefix("test_") for path in (ROOT / "tests" / "commands").glob("test_*.py")}
    assert {"evaluate" if name == "main" else name for name in commands} <= tests


@pytest.mark.parametrize(
    "override",
    [f"dataset={option}" for option in DATASETS]
    + [f"{role}={option}" for role in ROLE_GROUPS for option in OFFLINE_MODELS + ROBUSTBENCH_MODELS]
    + [f"defense={option}" for option in DEFENSES]
    + [f"receiver_defense={option}" for option in RECEIVER_DEFENSES]
    + [f"reversion={option}" for option in REVERSIONS]
    + [f"score_model={option}" for option in SCORE_MODELS]
    + [f"attack={option}" for option in ATTACKS]
    + [f"trainer={option}" for option in TRAINERS]
    + [f"logger={option}" for option in LOGGERS]
    + [f"experiment={option}" for option in EXPERIMENTS],
)
def test_every_shipped_option_passes_validation(
    override: str, compose_config, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The schema layer must refuse bad input only: every option as shipped validates without a warning, given
    what it leaves ??? for the user (a folder of images, a model's file).

    Receiver-side options are checked with the oblivious attacker: gradient attacks through a
    non-differentiable g are refused on purpose (tested in test_receiver_defenses.py).
    """
    extra = []
    if override == "dataset=folder":  # one image named as the folder loader wants, so nothing is left unused
        Image.new("RGB", (32, 32)).save(tmp_path / "0_0.png")
        extra.append(f"dataset.root={tmp_path}")
    group, _, option = override.partition("=")
    if group in ROLE_GROUPS:
        extra += user_settings(group, option, request)
    if override.startswith("receiver_defense=") and override != "receiver_defense=none":
        extra.append("threat.oblivious=true")
    if override.startswith("attack="):
        extra += attack_context(override.removeprefix("attack="))
    if override in [f"{role}={option}" for role in ("backbone", "victim") for option in LABEL_ONLY]:
        with pytest.raises(ValueError, match="can only be the classifier"):
            validate_config(compose_config(override))
        return
    assert validate_config(compose_config(override, *extra)) == []


def test_role_groups_are_the_model_configs() -> None:
    for role in ROLE_GROUPS:
        assert (CONF_DIR / role).resolve() == (CONF_DIR / "model").resolve()


def test_default_composition_is_the_offline_digits_job(compose_config) -> None:
    cfg = compose_config()
    assert cfg.dataset._target_.endswith("digits") and cfg.threat.eps == 0.2
    assert cfg.defense._target_.endswith("FastPreemption") and cfg.attack._target_.endswith("AutoAttack")
    assert cfg.trainer.inference_mode is False and cfg.logger.wandb.offline is True


@pytest.mark.parametrize("option", DATASETS)
def test_dataset_configs_instantiate(option: str, compose_config, tmp_path: Path) -> None:
    overrides = [f"dataset={option}"]
    if option == "folder":
        from preempt.datasets.package_samples import foolbox_data_dir

        for path in foolbox_data_dir().glob("cifar10_0*.png"):
            (tmp_path / path.name.removeprefix("cifar10_")).write_bytes(path.read_bytes())
        overrides.append(f"dataset.root={tmp_path}")
    if option == "imagenet_samples":
        overrides.append("dataset.n_samples=2")
    cfg = compose_config(*overrides)
    assert 0 < cfg.threat.eps <= 0.2 and cfg.threat.norm == "Linf"
    if option == "cifar10":  # no network here: must fail fast, naming the folder to fill
        start = time.perf_counter()
        assert "cifar-10-batches-py" in str(instantiate_error(cfg.dataset, DatasetNotFoundError))
        assert time.perf_counter() - start < 30
        return
    if option == "imagenet":  # never downloaded: must fail at once, naming the files to place (tests/datasets/)
        start = time.perf_counter()
        assert f"{cfg.dataset.root}/images.csv" in str(instantiate_error(cfg.dataset, DatasetNotFoundError))
        assert time.perf_counter() - start < 1
        return
    data = instantiate(cfg.dataset)
    assert isinstance(data, ImageDataset) and len(data) > 0


@pytest.mark.parametrize("option", OFFLINE_MODELS)
def test_offline_model_configs_instantiate_in_every_role(
    option: str, compose_config, digits_models, request: pytest.FixtureRequest
) -> None:
    roles = [[f"{role}={option}", *user_settings(role, option, request)] for role in ROLE_GROUPS]
    cfg = compose_config(*(override for role in roles for override in role))
    assert cfg.classifier == cfg.backbone == cfg.victim
    model = instantiate(cfg.classifier)
    if option in LABEL_ONLY:
        assert isinstance(model, LabelOnly)
        assert option != "noisy_labels" or isinstance(model.wrapped, GroundTruth)
        return
    assert isinstance(model, PixelClassifier) and not model.training
    settings = {key: value for key, value in OmegaConf.to_container(cfg.classifier).items() if key != "_target_"}
    spec = spec_of(option_target("model", option), settings)
    assert model.input_shape == spec.input_shape
    assert model(torch.rand(2, *model.input_shape)).shape == (2, spec.num_classes)


@pytest.mark.parametrize("option", ROBUSTBENCH_MODELS)
def test_robustbench_configs_reach_the_loader_and_fail_fast_offline(option: str, compose_config) -> None:
    """Weights cannot be downloaded here: instantiation must stop within seconds naming the file to place.

    Loading from a placed checkpoint is tested in test_models.py.
    """
    cfg = compose_config(f"victim={option}")
    assert cfg.victim.name == option
    start = time.perf_counter()
    assert cfg.paths.model_dir in str(instantiate_error(cfg.victim, CheckpointNotFoundError))
    assert time.perf_counter() - start < 60


def test_every_missing_model_file_is_named_in_one_refusal(compose_config) -> None:
    """Three ImageNet models without weights: one run lists all three files, not the first one only."""
    roles = {"classifier": "Singh2023Revisiting_ConvNeXt-L-ConvStem", "backbone": "Tian2022Deeper_DeiT-B"}
    roles["victim"] = "Liu2023Comprehensive_Swin-L"
    cfg = compose_config("dataset=imagenet_samples", *(f"{role}={name}" for role, name in roles.items()))
    with pytest.raises(ConfigError, match="3 model file") as refusal:
        Assembly(cfg).models()
    for role, name in roles.items():
        assert f"{role}: weights of RobustBench model {name}" in str(refusal.value)


@pytest.mark.parametrize("option", DEFENSES)
def test_defense_configs_bind_to_a_backbone_and_protect(option: str, compose_config, digits_models) -> None:
    cfg = compose_config(f"defense={option}")
    backbone = digits_models["digits_cnn_at"]
    # A5 with no checkpoint gets the project's robustifier, as a run binds it (trained once into the session zoo).
    defense = Assembly(cfg).defense(backbone)
    x = torch.rand(2, 1, 16, 16)
    assert defense(x, torch.tensor([1, 2])).shape == x.shape


@pytest.mark.parametrize("option", [name for name in TRANSFORMS if name in DEFENSES])
def test_each_transform_is_the_same_class_on_both_sides(option: str, compose_config) -> None:
    cfg = compose_config(f"defense={option}", f"receiver_defense={option}")
    sender, receiver = bind(instantiate(cfg.defense), {}), instantiate(cfg.receiver_defense)
    assert isinstance(receiver, InputTransform) and type(sender) is type(receiver)
    assert vars(sender) == vars(receiver)  # same settings, from one config file


@pytest.mark.parametrize("option", ATTACKS)
def test_attack_configs_bind_to_a_victim_and_attack(option: str, compose_config, digits_models) -> None:
    cfg = compose_config(f"attack={option}", "threat.eps=0.01", *attack_context(option))
    attack = bind(instantiate(cfg.attack), {"model": digits_models["digits_mlp"]})
    x = torch.rand(2, 1, 16, 16)
    assert attack(x, torch.tensor([1, 2])).shape == x.shape


def test_the_digits_score_model_config_trains_once_and_loads_from_the_cache(digits_score_model, compose_config) -> None:
    from conftest import TEST_SCORE_MODEL

    from preempt.score_models.digits import DigitsUNet

    cfg = compose_config(*TEST_SCORE_MODEL)  # the session's model is in the zoo: this load must not retrain
    start = time.perf_counter()
    model = instantiate(cfg.score_model)
    assert time.perf_counter() - start < 5
    assert isinstance(model, DigitsUNet) and model.image_shape == (1, 16, 16) and not model.training
    loaded, trained = model.state_dict().values(), digits_score_model.state_dict().values()
    assert all(torch.equal(a, b) for a, b in zip(loaded, trained, strict=True))


def test_a_score_model_for_other_images_is_refused_at_binding_naming_the_fitting_ones(
    digits_score_model, compose_config
) -> None:
    from conftest import TEST_SCORE_MODEL

    cfg = compose_config(
        "experiment=cifar10_resnet18", "receiver_defense=diffpure", "score_model=digits", *TEST_SCORE_MODEL
    )
    with pytest.raises(ConfigError, match=r"denoises 1-channel images and these have 3: .*ddpmpp_cifar10"):
        Assembly(cfg).receiver_defense((3, 32, 32))
    digits = compose_config("receiver_defense=diffpure", *TEST_SCORE_MODEL)
    assert Assembly(digits).receiver_defense((1, 16, 16)).score_model is not None


@pytest.mark.parametrize("option", PUBLISHED_SCORE_MODELS)
def test_published_score_models_fail_fast_naming_the_file_and_where_it_comes_from(option: str, compose_config) -> None:
    from preempt.checkpoints import CheckpointError

    cfg = compose_config(f"score_model={option}")
    message = str(instantiate_error(cfg.score_model, CheckpointError))
    assert cfg.score_model.checkpoint in message and "http" in message
    # With DiffPure picked (by the receiver or as the reversion), validation refuses it before any data or model.
    for part in ("receiver_defense", "reversion"):
        with pytest.raises(ConfigError, match=rf"score_model=\w+: .*{PUBLISHED_SCORE_MODELS[option]}"):
            validate_config(compose_config(f"score_model={option}", f"{part}=diffpure"))


@pytest.mark.parametrize("option", TRAINERS)
def test_trainer_configs_instantiate(option: str, compose_config) -> None:
    cfg = compose_config(f"trainer={option}")
    assert cfg.trainer.inference_mode is False and cfg.trainer.use_distributed_sampler is False
    if option == "gpu" and not torch.cuda.is_available():
        with pytest.raises(Exception, match=r"(?i)gpu|cuda"):
            instantiate(cfg.trainer)
        return
    assert isinstance(instantiate(cfg.trainer), L.Trainer)


@pytest.mark.parametrize("option", LOGGERS)
def test_logger_configs_instantiate(option: str, compose_config) -> None:
    from preempt.commands.evaluate import instantiate_loggers

    cfg = compose_config(f"logger={option}")
    loggers = instantiate_loggers(cfg)
    assert len(loggers) == {"default": 2, "wandb": 1, "csv": 1, "none": 0}[option]


def test_paper_experiments_carry_table_iii_settings(compose_config) -> None:
    cifar = compose_config("experiment=fast_preemption_cifar10")
    assert cifar.threat.eps == pytest.approx(8 / 255)
    assert (cifar.dataset.n_samples, cifar.dataset.offset) == (1000, 1000)
    assert (cifar.classifier.name, cifar.backbone.name, cifar.victim.name) == (
        "Hendrycks2020AugMix_ResNeXt",
        "Gowal2021Improving_R18_ddpm_100m",
        "Peng2023Robust",
    )
    d = cifar.defense
    assert (d.eta, d.forward_steps, d.backward_steps, d.n_samples) == (0.7, 1, 2, 20)
    imagenet = compose_config("experiment=fast_preemption_imagenet")
    assert imagenet.threat.eps == pytest.approx(4 / 255) and imagenet.attack.eps == pytest.approx(4 / 255)
    assert (imagenet.classifier.name, imagenet.backbone.name, imagenet.victim.name) == (
        "Tian2022Deeper_DeiT-B",
        "Singh2023Revisiting_ConvNeXt-L-ConvStem",
        "Liu2023Comprehensive_Swin-L",
    )
    assert imagenet.dataset._target_.endswith("imagenet.imagenet")
    assert (
        len(instantiate(compose_config("experiment=fast_preemption_imagenet", "dataset=imagenet_samples").dataset))
        == 20
    )
    instantiate_error(cifar.dataset, DatasetNotFoundError)


def test_models_that_cannot_take_the_dataset_fail_before_any_work(compose_config) -> None:
    """Declared input shapes are checked against the loaded dataset before a model is built or trained."""
    from preempt.validation import check_parts_fit_dataset

    cfg = compose_config("dataset=cifar10_samples", "victim=autoattack_resnet18", "dataset.n_samples=2")
    with pytest.raises(ConfigError, match=r"classifier digits_model takes 1×16×16 images .* gives 3×32×32"):
        check_parts_fit_dataset(OmegaConf.to_container(cfg, resolve=True), instantiate(cfg.dataset))


def test_cifar10_resnet18_experiment_instantiates_every_part(compose_config) -> None:
    cfg = compose_config("experiment=cifar10_resnet18")
    data = instantiate(cfg.dataset)
    assembly = Assembly(cfg)
    models = assembly.models()
    assert models["classifier"] is models["backbone"] is models["victim"]  # one copy for identical configs
    x = data.images[:2]
    protected = assembly.defense(models["backbone"])(x, data.labels[:2])
    assert assembly.attack(models["victim"])(protected, data.labels[:2]).shape == x.shape
