"""Bit-depth reduction: at most 2**bits levels, the nearest level, 8 bits leaves 8-bit images alone."""

from __future__ import annotations

import pydantic
import pytest
import torch

from preempt.receiver_defenses.bit_depth import BitDepth


@pytest.mark.parametrize("bits", [1, 3, 5])
def test_output_takes_at_most_two_to_the_bits_values(bits: int, cifar_batch) -> None:
    x = cifar_batch[0]
    out = BitDepth(bits=bits).transform(x)
    values = out.unique()
    assert values.numel() <= 2**bits
    assert values.numel() == 2**bits, "the real images span the whole range, so every level is used"
    levels = values * (2**bits - 1)
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("bits", [1, 5])
def test_each_pixel_goes_to_the_nearest_level(bits: int) -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    out = BitDepth(bits=bits).transform(x)
    assert (out - x).abs().max() <= 0.5 / (2**bits - 1) + 1e-12


def test_one_bit_thresholds_at_one_half() -> None:
    x = torch.tensor([0.0, 0.49, 0.51, 1.0]).reshape(1, 1, 2, 2)
    assert BitDepth(bits=1).transform(x).flatten().tolist() == [0.0, 0.0, 1.0, 1.0]


def test_eight_bits_on_eight_bit_images_is_the_identity(cifar_batch) -> None:
    x = cifar_batch[0]
    torch.testing.assert_close(x * 255, (x * 255).round(), rtol=0, atol=1e-4)  # precondition: 8-bit images
    assert torch.equal(BitDepth(bits=8).transform(x), x)
    assert not torch.equal(BitDepth(bits=7).transform(x), x)


@pytest.mark.parametrize("bits", [0, 9])
def test_bits_outside_1_to_8_are_refused(bits: int) -> None:
    with pytest.raises(pydantic.ValidationError, match="bits"):
        BitDepth(bits=bits)


def test_floor_and_round_differ_on_known_values() -> None:
    x = torch.tensor([0.2, 0.5, 0.75, 1.0]).reshape(1, 1, 2, 2)
    rounded = BitDepth(bits=3).transform(x).flatten()
    floored = BitDepth(bits=3, rounding="floor").transform(x).flatten()
    torch.testing.assert_close(rounded, torch.tensor([1 / 7, 4 / 7, 5 / 7, 1.0]))
    # 255·x = 51, 127.5, 191.25, 255: truncated to 51, 127, 191, 255, then the low 5 bits cleared.
    torch.testing.assert_close(floored, torch.tensor([32, 96, 160, 224]) / 255)


@pytest.mark.parametrize("bits", [1, 3, 5, 8])
def test_floor_is_the_integer_shift_of_8_bit_values(bits: int) -> None:
    values = torch.arange(256)
    x = (values / 255).reshape(1, 1, 16, 16)
    shift = 8 - bits
    expected = ((values >> shift) << shift).reshape(1, 1, 16, 16) / 255
    assert torch.equal(BitDepth(bits=bits, rounding="floor").transform(x), expected)


def test_floor_never_brightens_and_keeps_shape_dtype_and_range(cifar_batch) -> None:
    for x in (cifar_batch[0], cifar_batch[0].double()):
        out = BitDepth(bits=3, rounding="floor").transform(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert out.min() >= 0 and out.max() <= 224 / 255 + 1e-7 and (out <= x).all()
        assert out.unique().numel() == 8


def test_an_unknown_rounding_is_refused_naming_the_key() -> None:
    with pytest.raises(pydantic.ValidationError, match="rounding"):
        BitDepth(rounding="ceil")
