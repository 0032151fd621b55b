"""SHIELD assembles 8×8 blocks of real JPEG outputs at its qualities, drawn per block."""

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


def test_shield_blocks_are_blocks_of_jpeg_at_its_qualities_and_mix_them(cifar_batch) -> None:
    x = cifar_batch[0]
    shield = Shield()
    assert shield.qualities == [20, 40, 60, 80]
    references = torch.stack([JPEG(quality=q).transform(x) for q in shield.qualities])  # (Q, B, C, H, W)
    torch.manual_seed(0)
    out = shield.transform(x)
    batch, _, height, width = x.shape
    used = set()
    for image in range(batch):
        for top in range(0, height, 8):
            for left in range(0, width, 8):
                block = out[image, :, top : top + 8, left : left + 8]
                matches = [
                    q
                    for q, reference in zip(shield.qualities, references, strict=True)
                    if torch.equal(block, reference[image, :, top : top + 8, left : left + 8])
                ]
                assert matches, f"image {image} block ({top}, {left}) matches no JPEG quality"
                if len(matches) == 1:
                    used.add(matches[0])
    assert len(used) > 1, f"only qualities {used} were identified over the batch"


def test_shield_handles_sides_that_are_not_multiples_of_8(cifar_batch) -> None:
    x = cifar_batch[0][:4, :, :13, :21]
    torch.manual_seed(0)
    out = Shield(qualities=[30]).transform(x)
    assert torch.equal(out, JPEG(quality=30).transform(x))


def test_shield_needs_at_least_one_quality() -> None:
    with pytest.raises(pydantic.ValidationError, match="qualities"):
        Shield(qualities=[])
