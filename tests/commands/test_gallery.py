"""The gallery command: Table 1 (output variance) of every shipped transform, and its picture."""

from pathlib import Path

from PIL import Image

from preempt.commands.gallery import main


def test_the_gallery_tables_every_transform_and_draws_them(tmp_path: Path, capsys) -> None:
    picture = tmp_path / "gallery.png"
    main(["--dataset", "digits", "--seeds", "0", "1", "--scale", "2", "--out", str(picture)])
    table = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "| False | False | 0.000 [0.000–0.000] | 1.000 [1.000–1.000] |" in rows["jpeg"]
    assert " | True | True | 0.000" not in rows["random_resize_pad"]  # two draws differ
    assert len(rows) == 1 + 9  # header and the nine shipped transforms
    assert Image.open(picture).size == (10 * 32, 32 + 14)
