"""The gallery command: Table 1 (output variance) of every shipped transform, and its picture."""

from pathlib import Path

from PIL import Image

from preempt.commands.gallery import main


def test_the_gallery_tables_every_transform_and_draws_them(tmp_path: Path, capsys) -> None:
    picture = tmp_path / "gallery.png"
    main(["--dataset", "digits", "--seeds", "0", "1", "--scale", "2", "--out", str(picture)])
    table = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    # A deterministic g changes the image (its change columns) but two draws agree (its variance columns).
    assert rows["jpeg"].endswith("| 0.000 [0.000–0.000] | 1.000 [1.000–1.000] |")
    assert "| False | False | 0.000 [0.000–0.000] |" not in rows["jpeg"]
    assert not rows["random_resize_pad"].endswith("| 0.000 [0.000–0.000] | 1.000 [1.000–1.000] |")  # draws differ
    shipped = len(list((Path(__file__).parents[2] / "conf" / "receiver_defense").glob("*.yaml"))) - 2  # none, diffpure
    assert len(rows) == 1 + shipped  # the header and every shipped transform
    assert Image.open(picture).size == ((1 + shipped) * 32, 32 + 14)
