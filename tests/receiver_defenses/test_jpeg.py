"""JPEG is Pillow's own encode-decode round trip."""

from __future__ import annotations

import io

import numpy as np
import pydantic
import pytest
import torch
from PIL import Image

from preempt.receiver_defenses.jpeg import JPEG
from preempt.receiver_defenses.shield import Shield

QUALITIES = (10, 75, 95)


def eight_bit(x: torch.Tensor) -> torch.Tensor:
    """The images on the 8-bit grid, so no rounding convention can make the reference differ from the codec's input."""
    return torch.round(x * 255) / 255


def pillow_round_trip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Each image saved by Pillow as JPEG at `quality` and decoded, as 0–255 integers (B, C, H, W)."""
    decoded = []
    for image in x:
        pixels = np.rint(image.permute(1, 2, 0).double().numpy() * 255).astype(np.uint8)
        source = Image.fromarray(pixels[..., 0]) if pixels.shape[-1] == 1 else Image.fromarray(pixels)
        buffer = io.BytesIO()
        source.save(buffer, format="JPEG", quality=quality)
        array = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
        decoded.append(torch.from_numpy(array.reshape(pixels.shape).copy()).permute(2, 0, 1))
    return torch.stack(decoded).to(torch.int64)


@pytest.mark.parametrize("quality", QUALITIES)
@pytest.mark.parametrize("batch", ["cifar_batch", "digits_batch"])
def test_jpeg_equals_pillows_round_trip(batch: str, quality: int, request: pytest.FixtureRequest) -> None:
    x = eight_bit(request.getfixturevalue(batch)[0])
    out = JPEG(quality=quality).transform(x)
    levels = out * 255
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)  # the codec's 8-bit output, unchanged
    expected = pillow_round_trip(x, quality)
    assert torch.equal(levels.round().to(torch.int64), expected)
    assert not torch.equal(levels.round().to(torch.int64), (x * 255).round().to(torch.int64)), "JPEG is lossy"


def test_lower_quality_loses_more(cifar_batch) -> None:
    x = cifar_batch[0]
    errors = [(JPEG(quality=q).transform(x) - x).abs().mean().item() for q in QUALITIES]
    assert errors[0] > errors[1] > errors[2], errors


@pytest.mark.parametrize("quality", [0, 101])
def test_a_quality_out_of_range_is_refused(quality: int) -> None:
    with pytest.raises(pydantic.ValidationError, match="quality"):
        JPEG(quality=quality)
    with pytest.raises(pydantic.ValidationError, match="qualities"):
        Shield(qualities=[50, quality])
