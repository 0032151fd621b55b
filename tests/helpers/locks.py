"""A folder held by another process, as a second run finds it when the first is still writing."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

HOLDER = """
import sys, time
from pathlib import Path
from preempt.files import lock_folder
lock_folder(Path(sys.argv[1]), sys.argv[2])
print("held", flush=True)
time.sleep(60)
"""


@contextlib.contextmanager
def folder_held_by_another_process(folder: Path, work: str) -> Iterator[int]:
    """Another process takes `folder`'s lock for `work`; yields its pid, and kills it after the block."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), work], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()
