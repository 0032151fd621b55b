"""The manifest protect keeps: append-only lines, a killed run's cut line skipped, settings compared by digest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from preempt.fingerprint import digest, without_neutral_keys
from preempt.parts import ConfigError
from preempt.protection.manifest import MANIFEST_FILE, ManifestError, ManifestWriter, differences, read_manifest


def entry(name: str, status: str) -> dict:
    """A line as protect writes it (the reader refuses any other)."""
    outcome = {"error": "corrupt"} if status == "failed" else {"output_sha256": "0" * 64}
    return {"input": name, "output": name, "input_dir": "/in", "input_sha256": "0" * 64, "channels": 3,
            "status": status, "settings": {}, "settings_sha256": digest({}), **outcome}  # fmt: skip


def test_the_last_line_about_an_input_wins_and_a_cut_line_is_skipped_then_ended(tmp_path: Path) -> None:
    writer = ManifestWriter(tmp_path)
    writer.append(entry("a.png", "failed"))
    writer.append(entry("a.png", "protected"))
    writer.close()
    with (tmp_path / MANIFEST_FILE).open("a") as handle:
        handle.write('{"input": "b.png", "stat')  # a run killed while writing
    assert read_manifest(tmp_path) == {"a.png": entry("a.png", "protected")}
    resumed = ManifestWriter(tmp_path)
    resumed.append(entry("b.png", "protected"))
    resumed.close()
    assert set(read_manifest(tmp_path)) == {"a.png", "b.png"}
    assert json.loads((tmp_path / MANIFEST_FILE).read_text().splitlines()[-1])["input"] == "b.png"


def test_paths_and_memory_chunks_do_not_change_the_settings_digest() -> None:
    settings = {"backbone_settings": {"cache_dir": "/a", "seed": 0}, "defense_settings": {"copies_per_pass": 64}}
    moved = {"backbone_settings": {"cache_dir": "/b", "seed": 0}, "defense_settings": {"copies_per_pass": 8}}
    assert digest(without_neutral_keys(settings)) == digest(without_neutral_keys(moved))
    reseeded = {"backbone_settings": {"cache_dir": "/a", "seed": 1}, "defense_settings": {}}
    assert digest(without_neutral_keys(settings)) != digest(without_neutral_keys(reseeded))
    assert differences(without_neutral_keys(settings), without_neutral_keys(reseeded)) == [
        "backbone_settings.seed: 0 → 1"
    ]


def test_a_bad_line_is_a_config_error_so_protect_refuses_it_in_one_line(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(entry("a.png", "weird")) + "\n")
    with pytest.raises(ManifestError, match=r"line 1: status 'weird'") as refusal:
        read_manifest(tmp_path)
    assert isinstance(refusal.value, ConfigError)
