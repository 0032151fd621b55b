"""Writing files so that a crash, a signal or a concurrent reader never sees a half-written one, a lock so that
two processes do not do the same work at once, and the folders of installed packages that ship data."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import signal
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


def installed_package_dir(package: str, ships: str) -> Path:
    """The folder of the installed `package`, found without importing it, for the files it ships (`ships` says
    which, for the message when the package is missing)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{package} (which ships {ships}) is not installed; run `make install`.")
    return Path(next(iter(spec.submodule_search_locations)))
