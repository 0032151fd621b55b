"""The annotated types that make each target's signature its config schema: fractions read as the papers write them."""

import pydantic
import pytest

from preempt.parts.constraints import AtLeastOne, Eps, Norm, StepFraction, read_fraction


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
