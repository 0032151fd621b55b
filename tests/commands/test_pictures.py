"""`python -m preempt.commands.pictures` on the digits defaults: the three PNGs and the numbers, identical on a
rerun."""

import json
from pathlib import Path

import pytest

from preempt.commands.pictures import main
from preempt.reproduce.pictures import (
    FIGURE4_FILE,
    FIGURE5_FILE,
    FIGURE7_BACKBONES,
    FIGURE7_FILE,
    NUMBERS_FILE,
    REVERSIONS,
)

# Two images and AutoAttack's first attack only: the pictures of the defaults, in seconds.
QUICK = ("attack.attacks=[apgd-ce]", "--images", "2")


def pictures(out: Path, zoo_dir: Path) -> dict:
    main([str(out), f"paths.cache_dir={zoo_dir}", *QUICK])
    return json.loads((out / NUMBERS_FILE).read_text())


def test_the_command_draws_the_three_figures_and_repeats(tmp_path: Path, zoo_dir: Path) -> None:
    numbers = pictures(tmp_path / "first", zoo_dir)
    for name in (FIGURE4_FILE, FIGURE5_FILE, FIGURE7_FILE):
        assert (tmp_path / "first" / name).read_bytes().startswith(b"\x89PNG")
    assert numbers["dataset"] == "digits_test" and numbers["eps"] == 0.2 and numbers["attack"] == "AutoAttack"
    images = numbers["figure4"]["images"]
    assert [image["index"] for image in images] == [0, 1]
    for image in images:
        assert image["linf_protection"] <= 0.2 and image["linf_attack"] <= 0.2
        assert 0 < image["ssim"] <= 1
        assert image["success"] == (image["victim_attacked_protected"] == image["label"])
    two_runs = numbers["figure5"]["two_runs"]
    assert two_runs["mean_cosine"] > 0.5 and two_runs["mean_sign_agreement"] > 0.75
    reversions = numbers["figure5"]["reversions"]
    assert [reversions[option]["knowledge"] for option in REVERSIONS] == ["white-box", "black-box"]
    assert all(len(entry["images"]) == 2 for entry in reversions.values())
    backbones = numbers["figure7"]["backbones"]
    assert list(backbones) == list(FIGURE7_BACKBONES)
    for entry in backbones.values():
        assert [image["linf_protection"] <= 0.2 for image in entry["images"]] == [True, True]
        assert -1 <= entry["mean_ssim_to_original"] <= 1
    # The paper's point: the adversarially trained backbone's perturbation looks more like the digit.
    assert backbones["digits_cnn_at"]["mean_ssim_to_original"] > backbones["digits_cnn"]["mean_ssim_to_original"]

    assert pictures(tmp_path / "again", zoo_dir) == numbers


def test_too_many_images_is_refused_in_one_line(tmp_path: Path, zoo_dir: Path) -> None:
    with pytest.raises(SystemExit, match=r"^error: --images 500: the dataset holds 200 images"):
        main([str(tmp_path), f"paths.cache_dir={zoo_dir}", "--images", "500"])
    assert not (tmp_path / NUMBERS_FILE).exists()
