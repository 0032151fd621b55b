"""The renderer: a folder of results.json becomes the expected table (golden files), claims are judged on means,
and a cell with runs missing is never shown as a mean."""

import json
from pathlib import Path

import pytest
import yaml

from preempt.commands.reproduce import render_all
from preempt.config import composer
from preempt.reproduce.render import Stat, claim_verdict, condition_holds
from preempt.reproduce.runs import table_cells
from preempt.reproduce.tables import Condition, load_table

TINY = Path(__file__).parent / "tables" / "tiny.yaml"
GOLDEN = Path(__file__).parent / "golden"
# Made-up metrics per (row, run): each seed adds 0.05 to the accuracies, so the std over seeds 0 and 1 is known.
METRICS = {
    ("none", "pgd"): {"test/defense_seconds_per_image": 0.0, "test/protected_clean_acc": 0.875, "test/robust_acc": 0.1},
    ("none", "fgsm"): {"test/robust_acc": 0.25},
    ("ours", "pgd"): {
        "test/defense_seconds_per_image": 0.0045,
        "test/protected_clean_acc": 0.9,
        "test/robust_acc": 0.6,
    },
    ("ours", "fgsm"): {"test/robust_acc": 0.7},
}


def write_runs(runs_dir: Path, cells, skip: tuple = ()) -> None:
    for cell in cells:
        for seed, fingerprint in cell.fingerprints.items():
            if (cell.row, cell.run, seed) in skip:
                continue
            metrics = {
                key: value + 0.05 * seed * (key != "test/defense_seconds_per_image")
                for key, value in METRICS[(cell.row, cell.run)].items()
            }
            run = {
                "fingerprint": fingerprint,
                "finished_at": "2026-11-22T00:00:00+00:00",
                "device": "test-cpu",
                "n_samples": 8,
            }
            folder = runs_dir / cell.folder / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "results.json").write_text(json.dumps({"run": run, "metrics": metrics}))


@pytest.fixture(scope="module")
def tiny_cells():
    table = load_table(TINY)
    with composer():
        cells, _ = table_cells(table, "quick")
    return table, cells


def test_a_folder_of_results_renders_as_the_golden_table(tmp_path: Path, tiny_cells) -> None:
    table, cells = tiny_cells
    write_runs(tmp_path / "runs", cells)
    written = render_all([table], {table.name: cells}, "quick", tmp_path, tmp_path / "runs")
    assert {path.name for path in written} == {"tiny.md", "tiny.tex", "tiny.png", "index.md"}
    for name in ("tiny.md", "tiny.tex"):
        assert (tmp_path / name).read_text() == (GOLDEN / name).read_text(), name


def test_a_cell_with_a_run_missing_is_not_a_mean(tmp_path: Path, tiny_cells) -> None:
    table, cells = tiny_cells
    write_runs(tmp_path / "runs", cells, skip=(("ours", "fgsm", 1),))
    render_all([table], {table.name: cells}, "quick", tmp_path, tmp_path / "runs")
    text = (tmp_path / "tiny.md").read_text()
    assert "— (1/2 runs) (85.0)" in text
    assert "| — (missing runs) |" in text and "**Incomplete**" in text


def test_a_run_whose_settings_changed_since_is_not_shown(tmp_path: Path, tiny_cells) -> None:
    """Results are found by fingerprint: files from another config in the cell's own folder are ignored."""
    table, cells = tiny_cells
    write_runs(tmp_path / "runs", cells)
    for path in (tmp_path / "runs").rglob("results.json"):
        data = json.loads(path.read_text())
        data["run"]["fingerprint"] = "an older config"
        path.write_text(json.dumps(data))
    render_all([table], {table.name: cells}, "quick", tmp_path, tmp_path / "runs")
    assert "**Incomplete**" in (tmp_path / "tiny.md").read_text()


def test_a_row_that_takes_some_runs_shows_no_cell_for_the_others(tmp_path: Path) -> None:
    """Figure 3 runs BPDA+EOT on three of its defenses only: the others' EOT columns are "—", with nothing
    missing, and a claim ranks among the rows that have the cell."""
    data = yaml.safe_load(TINY.read_text())
    data["rows"][0]["runs"] = ["pgd"]
    data["rows"][1]["claim"]["holds"] = [{"best": "fgsm", "among": ["ours"]}]
    path = tmp_path / "partial.yaml"
    path.write_text(yaml.safe_dump(data))
    table = load_table(path)
    with composer():
        cells, _ = table_cells(table, "quick")
    assert sorted((cell.row, cell.run) for cell in cells) == [("none", "pgd"), ("ours", "fgsm"), ("ours", "pgd")]
    write_runs(tmp_path / "runs", cells)
    render_all([table], {table.name: cells}, "quick", tmp_path, tmp_path / "runs")
    text = (tmp_path / "partial.md").read_text()
    assert "| no defense | 0 ± 0 (0) | 90.0 ± 3.5 (90.0) | 12.5 ± 3.5 (10.0) | — (20.0) | 2×8 |  |" in text
    assert "**Incomplete**" not in text and "| yes |" in text


def stats(**means: float) -> dict:
    return {tuple(key.split("__")): Stat((value,), 1) for key, value in means.items()}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"greater": ["a.x", "b.x"]}, True),
        ({"less": ["a.x", "b.x"]}, False),
        ({"greater": ["a.x", 40]}, True),
        ({"within": ["a.x", "b.x", 5]}, False),
        ({"within": ["a.x", "b.x", 10]}, True),
        ({"best": "x"}, True),
        ({"lowest": "x"}, False),
        ({"best": "x", "among": ["a", "b"]}, True),
        ({"greater": ["a.x", "c.x"]}, None),
        ({"greater": ["a.x", "b.x"], "factor": 1.2}, True),
        ({"greater": ["a.x", "b.x"], "factor": 1.3}, False),
        ({"less": ["b.x", "a.x"], "factor": 1.2}, True),
        ({"less": ["b.x", "a.x"], "factor": 1.3}, False),
        ({"closer": ["a.x", "b.x", 48]}, True),
        ({"closer": ["b.x", "a.x", 48]}, False),
    ],
)
def test_claims_compare_means_and_say_so_when_a_cell_is_missing(condition: dict, expected) -> None:
    means = stats(a__x=50.0, b__x=40.0)
    assert condition_holds(Condition(**condition), "a", ["a", "b"], means) is expected


def test_a_claim_says_which_checks_its_scale_leaves_out() -> None:
    """A condition limited to other scales is not tested; a comparison with a row the scale does not run is left
    out and a ranking drops that row, and the verdict says both, never a bare "yes" for less than the claim."""
    from preempt.reproduce.tables import Claim, Row

    holds = [
        {"best": "x", "among": ["a", "b", "paper_only"]},
        {"greater": ["a.x", "paper_only.x"]},
        {"within": ["a.x", "b.x", 1], "scales": ["paper"]},
    ]
    row = Row(key="a", name="a", claim=Claim(says="a wins", holds=[Condition(**c) for c in holds]))
    means = stats(a__x=50.0, b__x=40.0)
    verdict = claim_verdict(row, ["a", "b"], means, "quick")
    assert verdict == "yes (1 of 3 checks at this scale; ranked without paper_only, not run at this scale)"
    assert claim_verdict(row, ["a", "b"], means, "paper").startswith("no")
    only_paper = Row(key="a", name="a", claim=Claim(says="s", holds=[Condition(**holds[2])]))
    assert claim_verdict(only_paper, ["a", "b"], means, "quick") == "— (not checked at this scale)"


def test_figures_4_and_5_join_the_index_from_their_numbers_without_drawing_again(tmp_path: Path) -> None:
    from preempt.commands.reproduce import PICTURES_PRESET, draw_pictures
    from preempt.reproduce.pictures import FIGURE7_BACKBONES, NUMBERS_FILE

    assert draw_pictures("quick", [], tmp_path, tmp_path / "logs", draw=False) == ([], "")
    reversion = {"knowledge": "white-box", "mean_erased": 0.25}
    numbers = {
        "overrides": [f"experiment={PICTURES_PRESET}", "scale=quick"],
        "dataset": "digits",
        "eps": 0.2,
        "norm": "Linf",
        "attack": "AutoAttack",
        "figure4": {"images": [{}, {}], "mean_ssim": 0.79, "success_rate": 1.0},
        "figure5": {"two_runs": {"mean_cosine": 0.96, "mean_sign_agreement": 0.94}, "reversions": {"w": reversion}},
        "figure7": {"backbones": {name: {"mean_ssim_to_original": 0.1} for name in FIGURE7_BACKBONES}},
    }
    (tmp_path / "figures_4_5").mkdir()
    (tmp_path / "figures_4_5" / NUMBERS_FILE).write_text(json.dumps(numbers))
    figures, section = draw_pictures("quick", [], tmp_path, tmp_path / "logs", draw=False)
    assert [path.name for path in figures] == [
        "figure4_perturbations.png", "figure5_reversion.png", "figure7_backbones.png"
    ]  # fmt: skip
    assert "mean SSIM 0.79 (the paper's: 0.962)" in section and "digits_cnn_at 0.1" in section
    assert "mean cosine 0.96" in section and "white-box 25%" in section and "survive AutoAttack: 100%" in section
