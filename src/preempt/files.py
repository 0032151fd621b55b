"""Writing files so that a crash, a signal or a concurrent reader never sees a half-written one."""

from __future__ import annotations

import json
import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path


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
