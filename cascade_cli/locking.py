"""One writer per directory: a run, a study or a prepared dataset being written is locked.

The lock is an advisory `flock` on a `.lock` file inside the directory (the `filelock` package).
The operating system drops it when its process ends, however it ends, so a lock left behind by a
killed process never blocks anyone; the empty `.lock` file may stay and means nothing by itself.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from cascade_cli.errors import UserError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def directory_lock(directory: str | Path, what: str) -> Iterator[None]:
    """Hold the lock of `directory` (created if missing) for the block, or fail at once with a
    UserError (exit code 2) if another live process holds it. `what` names the directory's kind in
    the message, e.g. "run directory"."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(directory / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"{directory}: another process is writing this {what} right now; wait until it "
                        "finishes, or stop it, or use another directory") from None
    try:
        yield
    finally:
        lock.release()
