"""classifier=noisy_labels: the reversion protocol's poor classifier, wrong on a seeded fraction of samples."""

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from preempt.models import GroundTruth
from preempt.models.noisy_labels import NoisyLabels, corrupt_labels
from preempt.parts import ConfigError
from preempt.validation import check_parts_fit_dataset, validate_config

N = 20_000


def _labels(n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    index = torch.arange(n)
    return index % 10, index


def test_a_wrong_fraction_of_labels_each_moved_uniformly_to_another_class() -> None:
    y, index = _labels()
    noisy = corrupt_labels(y, index, num_classes=10, wrong_fraction=0.3, seed=0)
    wrong = noisy != y
    assert abs(wrong.float().mean().item() - 0.3) < 0.015  # 4 standard errors at n = 20,000
    shifts = torch.bincount((noisy[wrong] - y[wrong]) % 10, minlength=10)
    assert shifts[0] == 0  # a wrong label is never the wrapped label
    share = shifts[1:].float() / wrong.sum()
    assert (share - 1 / 9).abs().max() < 0.02  # uniform among the nine others


def test_labels_depend_on_the_sample_not_on_the_batch_and_change_with_the_seed() -> None:
    y, index = _labels(1000)
    whole = corrupt_labels(y, index, 10, 0.5, seed=3)
    order = torch.randperm(1000)
    pieces = [corrupt_labels(y[part], index[part], 10, 0.5, seed=3) for part in order.split(37)]
    assert torch.equal(torch.cat(pieces), whole[order])
    other_seed = corrupt_labels(y, index, 10, 0.5, seed=4)
    assert 0.3 < (other_seed != whole).float().mean() < 0.9


@pytest.mark.parametrize(("fraction", "wrong"), [(0.0, 0.0), (1.0, 1.0)])
def test_the_fraction_ends_are_exact(fraction: float, wrong: float) -> None:
    y, index = _labels(500)
    assert (corrupt_labels(y, index, 10, fraction, seed=0) != y).float().mean() == wrong


def test_wrapping_a_classifier_corrupts_its_predictions(digits_models, digits_batch) -> None:
    x, y = digits_batch
    classifier = digits_models["digits_mlp"]
    index = torch.arange(len(x)) + 100
    noisy = NoisyLabels(wrapped=classifier, wrong_fraction=0.5, seed=1).labels(x, y, index, 10)
    predicted = classifier(x).argmax(dim=1)
    assert torch.equal(noisy, corrupt_labels(predicted, index, 10, 0.5, seed=1))
    assert isinstance(NoisyLabels().wrapped, GroundTruth)


def test_config_wraps_the_ground_truth_follows_the_run_seed_and_wraps_any_model(compose_config) -> None:
    cfg = compose_config("classifier=noisy_labels", "seed=7")
    labeler = instantiate(cfg.classifier)
    assert isinstance(labeler.wrapped, GroundTruth) and labeler.wrong_fraction == 0.5 and labeler.seed == 7
    assert validate_config(cfg) == []
    wrapped = compose_config("classifier=noisy_labels", "model@classifier.wrapped=digits_mlp")
    assert wrapped.classifier.wrapped.architecture == "mlp"


def test_bad_settings_and_roles_are_refused_naming_the_key(compose_config) -> None:
    with pytest.raises(ConfigError, match=r"classifier.wrong_fraction=1.5"):
        validate_config(compose_config("classifier=noisy_labels", "classifier.wrong_fraction=1.5"))
    with pytest.raises(ConfigError, match=r"classifier.wrapped.architecture"):
        validate_config(
            compose_config(
                "classifier=noisy_labels", "model@classifier.wrapped=digits_mlp", "classifier.wrapped.architecture=rnn"
            )
        )
    with pytest.raises(ConfigError, match=r"victim=(noisy_labels|NoisyLabels): a label-only model"):
        validate_config(compose_config("victim=noisy_labels"))


def test_a_wrapped_classifier_of_other_images_is_refused_with_the_dataset(compose_config) -> None:
    from preempt.datasets.package_samples import cifar10_samples

    cfg = compose_config(
        "experiment=cifar10_resnet18", "classifier=noisy_labels", "model@classifier.wrapped=digits_mlp"
    )
    with pytest.raises(ConfigError, match=r"classifier .* takes 1×16×16 images"):
        check_parts_fit_dataset(OmegaConf.to_container(cfg, resolve=True), cifar10_samples())
