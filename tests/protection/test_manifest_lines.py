"""Every manifest line protect could not have written is refused with the file, the line and the fix; a killed
run's cut lines are skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.manifests import protected_folder

from preempt.protection.manifest_lines import MANIFEST_FILE, UnreadableManifestError, read_lines


def good_line(tmp_path: Path) -> tuple[Path, dict]:
    _, target = protected_folder(tmp_path, [3])
    return target, json.loads((target / MANIFEST_FILE).read_text())


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda entry: entry.pop("output"), "it has no output"),
        (lambda entry: entry.pop("settings"), "it has no settings"),
        (lambda entry: entry.update(output=["a"]), "output is a list, not a string"),
        (lambda entry: entry.update(status="weird"), "status 'weird' is neither of protected, failed"),
        (lambda entry: entry.update(channels=5), r"channels is 5, not 1 \(gray\) or 3 \(RGB\)"),
        (lambda entry: entry.update(channels=True), "channels is true/false, not a whole number"),
        (lambda entry: entry.update(output="/etc/a.png"), "output '/etc/a.png' is absolute: .* inside OUTPUT_DIR"),
        (lambda entry: entry.update(input="../../a.png"), "input '../../a.png' climbs out with \\.\\.: .* INPUT_DIR"),
        (lambda entry: entry.update(status="failed"), "it has no error"),
    ],
)
def test_a_line_protect_could_not_have_written_is_refused_naming_the_file_and_line(
    tmp_path: Path, edit, problem: str
) -> None:
    target, entry = good_line(tmp_path)
    edit(entry)
    with (target / MANIFEST_FILE).open("a") as handle:
        handle.write(json.dumps(entry) + "\n")
    with pytest.raises(UnreadableManifestError, match=rf"manifest\.jsonl, line 2: {problem}; .*restore the line"):
        read_lines(target)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b'{"input": "a.png",, "status": "failed"}', r"it is not JSON \(Expecting property name .* at column 19\)"),
        (b"not json at all", r"it is not JSON"),
        (b'["a.png"]', r"it is a list, not a JSON object"),
        (b'{"input": "\xff.png"}', r"byte 0xff .* is not UTF-8"),
    ],
)
def test_a_malformed_complete_line_is_refused_even_before_good_ones(tmp_path: Path, line: bytes, problem: str) -> None:
    target, entry = good_line(tmp_path)
    (target / MANIFEST_FILE).write_bytes(line + b"\n" + json.dumps(entry).encode() + b"\n")
    with pytest.raises(UnreadableManifestError, match=rf"line 1: {problem}"):
        read_lines(target)


def test_a_killed_runs_cut_lines_are_skipped_at_the_end_and_where_the_resumed_run_ended_them(tmp_path: Path) -> None:
    target, entry = good_line(tmp_path)
    whole = json.dumps(entry, sort_keys=True).encode()
    cut_ended = whole[:-40] + b"\n"  # a killed run's line, ended with a newline by the run that resumed
    (target / MANIFEST_FILE).write_bytes(cut_ended + whole + b"\n" + b"\n" + whole[:25])  # then a blank, a cut end
    assert {name: line.number for name, line in read_lines(target).items()} == {"0.png": 2}
    (target / MANIFEST_FILE).write_bytes(whole + b"\n" + b'{"input": "caf\xc3')  # cut inside a UTF-8 character
    assert read_lines(target)["0.png"].number == 1


def test_a_manifest_that_is_a_folder_is_refused_as_such(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_FILE).mkdir()
    with pytest.raises(UnreadableManifestError, match=r"manifest\.jsonl is a folder, not the manifest .*move it out"):
        read_lines(tmp_path)
    assert read_lines(tmp_path / "elsewhere") == {}
