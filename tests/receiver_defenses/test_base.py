"""What the receiver runs: victim∘g, whose gradient through a non-differentiable g raises instead of being zero; and
how much g changes an image (the second paper's Table 1): two draws apart, and one draw against its input with the
authors' RMS and scikit-image's SSIM."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from skimage.metrics import structural_similarity

from preempt.commands.evaluate import evaluate
from preempt.parts import Identity, NonDifferentiableTransformError
from preempt.receiver_defenses import ReceiverDefended, receiver_model
from preempt.receiver_defenses.base import output_change, uniform_ssim
from preempt.receiver_defenses.bit_depth import BitDepth
from preempt.receiver_defenses.dct_distortion import DCTDistortion
from preempt.receiver_defenses.random_resize_pad import RandomResizePad
from preempt.threat import to_8bit


def skimage_ssim(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """The oracle: the authors' call, structural_similarity over the channels with data range 1, per image."""
    pairs = zip(a.permute(0, 2, 3, 1).double().numpy(), b.permute(0, 2, 3, 1).double().numpy(), strict=True)
    return np.array([structural_similarity(p, q, channel_axis=2, data_range=1.0) for p, q in pairs])


@pytest.mark.parametrize("images", ["cifar_batch", "digits_batch"])
def test_uniform_ssim_is_scikit_images_on_real_images_in_one_batched_call(images: str, request) -> None:
    x = request.getfixturevalue(images)[0][:8]
    torch.manual_seed(0)
    g = DCTDistortion().transform(x)  # a strong change (SSIM ~0.3–0.5), and x against itself
    for a, b in ((g, x), (x, x), ((x + 0.05 * torch.randn_like(x)).clamp(0, 1), x)):
        expected = skimage_ssim(a, b)
        np.testing.assert_allclose(uniform_ssim(a.double(), b.double()).numpy(), expected, atol=1e-10)
        np.testing.assert_allclose(uniform_ssim(a.float(), b.float()).numpy(), expected, atol=2e-5)


def test_the_change_is_the_root_mean_square_over_every_value() -> None:
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64) * 0.5
    shifted = x.clone()
    shifted[0] += 0.2  # every value of image 0 moved by 0.2
    shifted[1, :, :4] += 0.3  # half the values of image 1 moved by 0.3
    rms, ssim = output_change(shifted, x)
    torch.testing.assert_close(rms, torch.tensor([0.2, 0.3 / 2**0.5, 0.0], dtype=torch.float64))
    assert ssim[2] == pytest.approx(1) and (ssim[:2] < 1).all()


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


def test_without_a_receiver_defense_the_victim_is_not_wrapped() -> None:
    victim = torch.nn.Linear(4, 2)
    assert receiver_model(victim, Identity()) is victim
    wrapped = receiver_model(victim, BitDepth())
    assert isinstance(wrapped, ReceiverDefended) and wrapped.victim is victim


def test_variance_is_measured_for_random_transforms_and_the_change_to_the_input_for_every_one(
    compose_config, digits_models, tmp_path: Path
) -> None:
    metrics, configs = {}, {}
    for option in ("random_resize_pad", "jpeg"):
        cfg = compose_config(
            f"receiver_defense={option}", "defense=none", "attack=none", "dataset.n_samples=32", "logger=none"
        )
        cfg.paths.output_dir = str(tmp_path / option)
        metrics[option], configs[option] = evaluate(cfg)["metrics"], cfg
    random, fixed = metrics["random_resize_pad"], metrics["jpeg"]
    assert random["test/receiver_variance_l2"] > 0 and random["test/receiver_variance_ssim"] < 1
    assert fixed["test/receiver_variance_l2"] == 0 and fixed["test/receiver_variance_ssim"] == 1
    assert random["test/receiver_change_rms"] > 0 and random["test/receiver_change_ssim"] < 1
    # A deterministic g changes its input too: one JPEG of each sent image against it, averaged over the images.
    cfg = configs["jpeg"]
    images = instantiate(cfg.dataset).images
    sent = to_8bit(images) if cfg.transmit_8bit else images
    rms, ssim = output_change(instantiate(cfg.receiver_defense).transform(sent), sent)
    assert fixed["test/receiver_change_rms"] == pytest.approx(rms.mean().item(), rel=1e-5)
    assert fixed["test/receiver_change_ssim"] == pytest.approx(ssim.mean().item(), rel=1e-5)
    assert fixed["test/receiver_change_rms"] > 0
    # No attack: robust accuracy is the receiver's accuracy on what was sent.
    assert fixed["test/robust_acc"] == fixed["test/protected_clean_acc"]
