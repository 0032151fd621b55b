"""`python -m preempt.commands.samples`: the 20 real sample images of the foolbox wheel, copied to try protect on."""

from pathlib import Path

import pytest
from PIL import Image

from preempt.commands.samples import main
from preempt.datasets.folder import labelled_files


@pytest.mark.parametrize(("prefix", "size"), [("cifar10", (32, 32)), ("imagenet", None)])
def test_the_samples_are_copied_as_labelled_images(prefix: str, size, tmp_path: Path, capsys) -> None:
    main([prefix, str(tmp_path / prefix)])
    files = sorted((tmp_path / prefix).iterdir())
    assert len(files) == 20 and capsys.readouterr().out.strip() == f"20 files in {tmp_path / prefix}"
    assert len(labelled_files(files)) == 20
    if size is not None:
        assert all(Image.open(path).size == size for path in files)


def test_an_unknown_prefix_is_refused_by_the_parser(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["mnist", str(tmp_path)])
