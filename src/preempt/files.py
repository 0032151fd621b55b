"""Writing files so that a crash, a signal or a concurrent reader never sees a half-written one (and, inside a
folder others can write to, never through a link planted there), locks so that two processes do not do the same work
at once or share one output folder, and the folders of installed packages that ship data."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import signal
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)


def replace_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """`write` fills a temporary file beside `path`, which is then renamed over it in one step.

    The file gets the permissions of any new file (umask), not mkstemp's owner-only 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_text_atomically(text: str, path: Path) -> Path:
    """A crash never leaves a truncated results file."""
    return replace_atomically(path, lambda tmp: tmp.write_text(text))


def write_json_atomically(data: dict, path: Path) -> Path:
    return write_text_atomically(json.dumps(data, indent=2) + "\n", path)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def exit_cleanly_on_sigterm() -> None:
    """SIGTERM (a scheduler's kill, `timeout`) raises SystemExit, so `finally` blocks remove temporary files.

    Python's default SIGTERM action ends the process at once, leaving any half-written temporary file behind.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: exit(128 + signum))


@contextlib.contextmanager
def exclusive_lock(path: Path, work: str) -> Iterator[None]:
    """Holds an exclusive lock on the file `path` for the block: another process asking for it waits, told which
    process is doing `work`. The kernel releases the lock when its holder exits, even when it is killed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            log.warning("waiting for %s: %s holds %s", work, handle.read().strip() or "another process", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.truncate(0)
        handle.write(f"process {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class FolderInUseError(RuntimeError):
    """Another process holds the folder's lock: two runs writing one folder would mix or lose each other's files."""


class LinkInFolderError(RuntimeError):
    """A symbolic link inside a folder the command writes: writing through it would put files elsewhere."""


LOCK_FILE = ".preempt.lock"
# Locks this process holds, so one process may take its own folder's lock again (a second in-process run).
HELD_LOCKS: dict[str, object] = {}


def lock_folder(folder: Path, work: str) -> None:
    """Takes an exclusive lock on `folder` (its `.preempt.lock` file) for as long as this process lives, or
    raises FolderInUseError naming the process that holds it. Unlike `exclusive_lock`, it does not wait: a
    second run would redo the first run's work into the same files. The kernel frees the lock when its holder
    exits, even when it is killed, so a stale lock file never blocks anyone."""
    key = os.path.realpath(folder)
    if key in HELD_LOCKS:
        return
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    handle = os.fdopen(descriptor, "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = handle.read().strip() or "another process"
        handle.close()
        raise FolderInUseError(
            f"{folder} is in use: {holder} is writing it; wait for it to finish, or use another folder"
        ) from None
    handle.truncate(0)
    handle.write(f"process {os.getpid()} ({work})\n")
    handle.flush()
    HELD_LOCKS[key] = handle


def release_folder(folder: Path) -> None:
    """Gives back a lock `lock_folder` took (a command that ends but whose process goes on, e.g. in tests)."""
    handle = HELD_LOCKS.pop(os.path.realpath(folder), None)
    if handle is not None:
        handle.close()


def links_inside(folder: Path) -> list[Path]:
    """Symbolic links anywhere under `folder` (not followed): what `write_inside` refuses to write through."""
    found = []
    for parent, folders, files in os.walk(folder):
        found += [Path(parent) / name for name in folders + files if os.path.islink(os.path.join(parent, name))]
    return sorted(found)


def write_inside(root: Path, relative: str, data: bytes) -> Path:
    """Writes `data` to `root/relative` atomically (a temporary file renamed over it) without following any link
    below `root`: every folder on the way is opened with O_NOFOLLOW, so a link planted there (by another user, or
    left by a tool) raises LinkInFolderError instead of sending the file elsewhere, even if it appears after a check."""
    *folders, name = Path(relative).parts
    descriptor = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for index, folder in enumerate(folders):
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder, dir_fd=descriptor)
            try:
                inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=descriptor)
            except OSError as error:
                if os.path.islink(root.joinpath(*folders[: index + 1])):
                    raise LinkInFolderError(f"{root.joinpath(*folders[: index + 1])} is a link") from None
                raise error
            os.close(descriptor)
            descriptor = inner
        tmp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666, dir_fd=descriptor)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(tmp, name, src_dir_fd=descriptor, dst_dir_fd=descriptor)  # replaces a link, never follows it
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=descriptor)
    finally:
        os.close(descriptor)
    return root / relative


SPECIAL_FILE_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def special_file_kind(path: Path) -> str | None:
    """What `path` is ("a folder", "a character device", ...) when it exists but is not a regular file, else None.
    Reading one fails with an error that names no file, never ends (/dev/zero) or blocks (a FIFO no one writes)."""
    try:
        mode = path.stat().st_mode
    except OSError:  # missing or unreachable: the caller's own "does not exist"
        return None
    if stat.S_ISREG(mode):
        return None
    return next((kind for is_kind, kind in SPECIAL_FILE_KINDS if is_kind(mode)), "a special file")


def installed_package_dir(package: str, ships: str) -> Path:
    """The folder of the installed `package`, found without importing it, for the files it ships (`ships` says
    which, for the message when the package is missing)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{package} (which ships {ships}) is not installed; run `make install`.")
    return Path(next(iter(spec.submodule_search_locations)))
