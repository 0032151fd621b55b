"""The annotated types that make each target's signature its config schema: fractions read as the papers write them,
weight files that must be there."""

from pathlib import Path

import pydantic
import pytest

from preempt.parts.constraints import AtLeastOne, Eps, Norm, Seed, StepFraction, WeightFile, read_fraction


def test_eps_reads_a_fraction_the_way_the_papers_write_it() -> None:
    adapter = pydantic.TypeAdapter(Eps)
    assert adapter.validate_python("8/255") == pytest.approx(8 / 255) and adapter.validate_python(0.2) == 0.2
    assert read_fraction(" 4 / 255 ") == pytest.approx(4 / 255) and read_fraction("abc") == "abc"
    with pytest.raises(ValueError, match="divides by zero"):
        read_fraction("1/0")
    with pytest.raises(pydantic.ValidationError):
        adapter.validate_python(0)


@pytest.mark.parametrize(("kind", "bad"), [(AtLeastOne, 0), (StepFraction, 1.5), (Norm, "L1")])
def test_out_of_range_values_are_refused(kind, bad) -> None:
    with pytest.raises(pydantic.ValidationError):
        pydantic.TypeAdapter(kind).validate_python(bad)


@pytest.mark.parametrize("seed", [-1, 2**32, 99999999999999999999])
def test_a_seed_outside_what_lightning_seeds_with_is_refused_naming_the_range(seed: int) -> None:
    with pytest.raises(pydantic.ValidationError, match="a seed is an integer from 0 to 4294967295"):
        pydantic.TypeAdapter(Seed).validate_python(seed)
    assert pydantic.TypeAdapter(Seed).validate_python(2**32 - 1) == 2**32 - 1


def test_a_weight_file_must_be_there_and_a_missing_one_is_named_in_full(tmp_path: Path, monkeypatch) -> None:
    adapter = pydantic.TypeAdapter(WeightFile)
    (tmp_path / "weights.pth").write_bytes(b"tensors")
    assert adapter.validate_python(str(tmp_path / "weights.pth")) == tmp_path / "weights.pth"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(pydantic.ValidationError, match=f"no file {Path.cwd()}/moved.pth: put the weight file there"):
        adapter.validate_python("moved.pth")
    with pytest.raises(pydantic.ValidationError, match=f"{tmp_path} is a folder, not a regular file: point it at"):
        adapter.validate_python(str(tmp_path))
    with pytest.raises(pydantic.ValidationError, match="/dev/zero is a device, pipe or socket, not a regular file"):
        adapter.validate_python("/dev/zero")  # reading it would never end
