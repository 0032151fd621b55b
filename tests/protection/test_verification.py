"""Verification trusts only the files: edited, missing and over-budget outputs are named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.manifests import BUDGET, SETTINGS, manifest_line, protected_folder, write_manifest
from helpers.protection import DIGITS, protect, write_digits
from PIL import Image

from preempt import threat
from preempt.commands.verify import print_verification
from preempt.figures import plot_protected
from preempt.protection import photos
from preempt.protection.verification import (
    EDITED,
    MISSING,
    NO_BUDGET,
    NORMS,
    NOT_PROTECTED,
    OVER,
    WITHIN,
    budget_problem,
    distance,
    verify,
)


def test_verify_names_edited_missing_and_over_budget_outputs(
    tmp_path: Path, zoo_dir: Path, digits_models, capsys
) -> None:
    source, target = tmp_path / "in", tmp_path / "out"
    write_digits(source, 4)
    protect(source, target, zoo_dir, *DIGITS)
    assert print_verification(target) == 0
    three_files, one_file = (
        plot_protected(target, tmp_path / "3.png", limit=3),
        plot_protected(target, tmp_path / "1.png", 1),
    )
    with Image.open(three_files) as three, Image.open(one_file) as one:
        assert three.width == 3 * one.width and three.height == one.height  # a column per file, three rows
    files = sorted(target.glob("*.png"))
    pixels = np.asarray(Image.open(files[0])).copy()
    pixels[0, 0] = 255 - pixels[0, 0]  # far outside 0.2 = 51 levels
    Image.fromarray(pixels, mode="L").save(files[0])
    files[1].unlink()
    checks = {check.output: check for check in verify(target)}
    assert checks[files[0].name].verdict == OVER and "output changed" in checks[files[0].name].note
    assert checks[files[1].name].verdict == MISSING
    assert [checks[file.name].verdict for file in files[2:]] == [WITHIN, WITHIN]
    assert print_verification(target) == 1
    assert "4 file(s): 2 within, 1 OVER, 1 missing" in capsys.readouterr().out


def test_an_output_that_is_a_copy_of_its_original_is_not_protected(tmp_path: Path, capsys) -> None:
    _, target = protected_folder(tmp_path, [0, 5])  # a forged "protected" line beside a pixel-identical copy
    assert [(check.verdict, check.linf_levels) for check in verify(target)] == [(NOT_PROTECTED, 0), (WITHIN, 5)]
    assert print_verification(target) == 1
    assert "2 file(s): 1 within, 0 OVER, 0 missing, 0 no budget, 1 NOT PROTECTED, 0 EDITED" in capsys.readouterr().out


def test_settings_changed_after_protect_wrote_them_are_named_with_their_line(tmp_path: Path) -> None:
    source, target = protected_folder(tmp_path, [200, 3])
    lines = [manifest_line(f"{index}.png", source, target) for index in range(2)]
    lines[1]["settings"] = {**SETTINGS, "budget": {"eps": 1.0, "norm": "Linf"}}  # its digest left as protect wrote it
    write_manifest(target, lines)
    first, second = verify(target)
    assert first.verdict == OVER
    assert second.verdict == EDITED and "line 2: its settings do not hash to its settings_sha256" in second.note


@pytest.mark.parametrize(
    "forged",
    [
        {"budget": None},
        {"budget": {"eps": 1.0, "norm": "Linf"}},
        {"budget": {"eps": "8/255", "norm": "Linf"}, "defense_settings": {"eps": "8/255", "norm": "Linf"}},
    ],
)
def test_a_budget_protect_could_not_have_written_is_forged_even_with_a_matching_digest(tmp_path: Path, forged) -> None:
    source, target = protected_folder(tmp_path, [200])
    write_manifest(target, [manifest_line("0.png", source, target, {**SETTINGS, **forged})])
    [check] = verify(target)
    assert check.verdict == EDITED and check.note.startswith("line 1: budget") and "(forged)" in check.note
    assert verify(target, budget=BUDGET)[0].verdict == EDITED  # a receiver's budget does not clear the manifest


def test_a_receivers_own_budget_catches_a_forgery_the_manifest_cannot_show(tmp_path: Path) -> None:
    loose = {"eps": 1.0, "norm": "Linf"}
    forged = {**SETTINGS, "defense_settings": {**SETTINGS["defense_settings"], **loose}, "budget": loose}
    source, target = protected_folder(tmp_path, [200, 8])
    write_manifest(target, [manifest_line(f"{index}.png", source, target, forged) for index in range(2)])
    assert [check.verdict for check in verify(target)] == [WITHIN, WITHIN]
    checks = verify(target, budget=BUDGET)
    assert [(check.verdict, check.linf_levels, check.limit) for check in checks] == [(OVER, 200, 8), (WITHIN, 8, 8)]
    l2 = verify(target, budget={"eps": 0.5, "norm": "L2"})[1]  # 64 pixels 8 levels off: 8 · 8/255 ≈ 0.251
    assert l2.verdict == WITHIN and l2.distance == pytest.approx(64 / 255)
    with pytest.raises(ValueError, match=r"the budget Linf eps 8 is more than .* write 8/255"):
        verify(target, budget={"eps": 8, "norm": "Linf"})


def test_a_defense_without_eps_is_measured_not_judged_unless_a_budget_is_given(tmp_path: Path) -> None:
    jpeg = {"defense": "jpeg", "defense_settings": {"quality": 75}, "budget": None}
    source, target = protected_folder(tmp_path, [12])
    write_manifest(target, [manifest_line("0.png", source, target, jpeg)])
    assert (verify(target)[0].verdict, verify(target)[0].limit) == (NO_BUDGET, None)
    assert verify(target, budget=BUDGET)[0].verdict == OVER


def test_the_norms_are_measured_as_the_threat_measures_them() -> None:
    rng = np.random.default_rng(1)
    before = rng.integers(0, 256, (3, 5, 7), dtype=np.uint8)
    after = np.clip(before.astype(int) + rng.integers(-9, 10, before.shape), 0, 255).astype(np.uint8)
    assert threat.NORMS == NORMS and threat.LEVELS == photos.LEVELS
    as_batch = [torch.from_numpy(levels)[None].float() / 255 for levels in (after, before)]
    for norm in NORMS:
        assert distance(after, before, norm) == pytest.approx(float(threat.distance(*as_batch, norm)), rel=1e-5)
    assert budget_problem({"eps": 8, "norm": "L2"}) is None
    assert "not a positive number" in budget_problem({"eps": 0, "norm": "RMS"})
    assert "none of Linf, L2" in budget_problem({"eps": 0.1, "norm": "L3"})
