"""A signal in the middle of a write leaves the old file intact and no temporary file behind."""

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, main_command
from helpers.locks import folder_held_by_another_process

from preempt.files import current_umask, replace_atomically, write_json_atomically

WRITER = """
import signal, sys, time
from pathlib import Path
from preempt.files import exit_cleanly_on_sigterm, replace_atomically

# Ctrl-C as in a terminal: a shell's background job (nohup ... &) starts with SIGINT ignored, which Python keeps.
signal.signal(signal.SIGINT, signal.default_int_handler)
exit_cleanly_on_sigterm()

def slow_write(tmp):
    tmp.write_text("half")
    print("writing", flush=True)
    time.sleep(60)

replace_atomically(Path(sys.argv[1]), slow_write)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_write_leaves_no_half_written_file(tmp_path: Path, signum: int) -> None:
    target = tmp_path / "results.json"
    target.write_text("finished")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signum)
    writer.wait(timeout=60)
    assert writer.returncode != 0
    if signum == signal.SIGTERM:
        assert writer.returncode == 128 + signal.SIGTERM  # exited through SystemExit, so `finally` ran
    assert target.read_text() == "finished"
    assert sorted(tmp_path.iterdir()) == [target]


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    """mkstemp creates 0600 files; results and cached models must be readable like every other output."""
    previous = os.umask(0o022)
    try:
        path = replace_atomically(tmp_path / "results.json", lambda tmp: tmp.write_text("{}"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.slow
def test_main_exits_cleanly_on_sigterm(tmp_path: Path, zoo_dir: Path, digits_models) -> None:
    command = main_command(tmp_path / "run", zoo_dir, "logger=none")
    main = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    for line in main.stdout:
        if "GPU available" in line:  # the trainer exists: the test loop is about to start
            break
    main.send_signal(signal.SIGTERM)
    main.wait(timeout=120)
    assert main.returncode == 128 + signal.SIGTERM
    assert not list((tmp_path / "run").rglob("*.tmp")) and not (tmp_path / "run" / "results.json").exists()


def test_atomic_write_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    write_json_atomically({"a": 1}, path)
    write_json_atomically({"a": 2}, path)
    assert json.loads(path.read_text()) == {"a": 2} and not list(tmp_path.glob("*.tmp"))


HOLDER = """
import sys, time
from pathlib import Path
from preempt.files import exclusive_lock

with exclusive_lock(Path(sys.argv[1]), "a test"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_lock_makes_the_next_process_wait_names_the_holder_and_is_freed_when_the_holder_is_killed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import threading

    from preempt.files import exclusive_lock

    lock = tmp_path / "model.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    acquired = threading.Event()

    def wait_for_it() -> None:
        with exclusive_lock(lock, "the training of model.pt"):
            acquired.set()

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    assert not acquired.wait(0.5), "the lock was taken while its holder still held it"
    assert f"waiting for the training of model.pt: process {holder.pid} holds {lock}" in caplog.text
    holder.kill()
    holder.wait()
    assert acquired.wait(10), "a killed holder's lock was not released"
    waiter.join()


def test_a_missing_package_that_ships_data_is_named_with_what_it_ships_and_the_fix() -> None:
    from preempt.files import installed_package_dir

    assert (installed_package_dir("foolbox", "the sample images") / "data").is_dir()
    with pytest.raises(ModuleNotFoundError, match=r"no_such_package \(which ships the weights\) is not installed; "):
        installed_package_dir("no_such_package", "the weights")


def test_a_folder_in_use_is_refused_naming_its_holder_and_freed_when_the_holder_is_killed(tmp_path: Path) -> None:
    from preempt.files import FolderInUseError, lock_folder, release_folder

    folder = tmp_path / "out"
    with (
        folder_held_by_another_process(folder, "preempt protect") as holder,
        pytest.raises(FolderInUseError) as refused,
    ):
        lock_folder(folder, "preempt protect")
    assert str(refused.value).startswith(f"{folder} is in use: process {holder} (preempt protect)")
    lock_folder(folder, "a test")
    lock_folder(folder, "a test")  # this process may take its own lock again
    release_folder(folder)


def test_write_inside_never_writes_through_a_link(tmp_path: Path) -> None:
    from preempt.files import LinkInFolderError, links_inside, write_inside

    root, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "sub").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(LinkInFolderError, match="sub is a link"):
        write_inside(root, "sub/a.png", b"data")
    assert not list(elsewhere.iterdir()), "nothing written through the folder link"

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (root / "b.png").symlink_to(victim)
    assert links_inside(root) == [root / "b.png", root / "sub"]
    write_inside(root, "b.png", b"data")
    assert victim.read_text() == "keep me" and (root / "b.png").read_bytes() == b"data", (
        "the link replaced, not followed"
    )

    written = write_inside(root, "new/deeper/c.png", b"c")
    assert written.read_bytes() == b"c" and oct(written.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())
    assert not list(root.rglob("*.tmp"))
