"""A run's fingerprint: what decides its numbers, and nothing that only names, places, logs or chunks it."""

from preempt.fingerprint import NOT_IN_FINGERPRINT, digest, run_fingerprint, without_neutral_keys

CONFIG = {
    "seed": 0,
    "defense": {"eps": 0.2, "copies_per_pass": None},
    "paths": {"output_dir": "a"},
    "task_name": "eval",
    "trainer": {"devices": 1, "enable_progress_bar": True},
    "speed": {"bf16": False, "keep_freed_memory": True},
}


def test_names_paths_logging_and_memory_chunks_leave_it_unchanged() -> None:
    base = run_fingerprint(CONFIG)
    assert (
        run_fingerprint({**CONFIG, "paths": {"output_dir": "b"}, "task_name": "other", "logger": {"csv": {}}}) == base
    )
    assert run_fingerprint({**CONFIG, "defense": {"eps": 0.2, "copies_per_pass": 64}}) == base
    timed_chunks = {"eps": 0.2, "copies_per_pass": None, "chunk_timings": "/elsewhere/chunk_timings.json"}
    assert run_fingerprint({**CONFIG, "defense": timed_chunks}) == base
    assert run_fingerprint({**CONFIG, "trainer": {"devices": 1, "enable_progress_bar": False}}) == base
    assert run_fingerprint({**CONFIG, "speed": {"bf16": False, "keep_freed_memory": False}}) == base
    assert {"paths", "logger", "skip_finished"} <= NOT_IN_FINGERPRINT


def test_anything_that_changes_a_number_changes_it() -> None:
    base = run_fingerprint(CONFIG)
    assert run_fingerprint({**CONFIG, "seed": 1}) != base
    assert run_fingerprint({**CONFIG, "defense": {"eps": 0.1, "copies_per_pass": None}}) != base
    assert run_fingerprint({**CONFIG, "speed": {"bf16": True, "keep_freed_memory": True}}) != base


def test_neutral_keys_go_at_any_depth_and_the_digest_ignores_key_order() -> None:
    assert without_neutral_keys({"a": [{"cache_dir": "x", "b": 1}], "model_dir": "y"}) == {"a": [{"b": 1}]}
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1}) != digest({"a": 2, "b": 1})
