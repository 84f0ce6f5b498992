"""Atomic file writes: a reader (or a crash) sees either the old file or the complete new one."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from cascade_cli.errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it over `path` only if the block succeeds.

    The file gets the permissions the user's umask gives any new file: some writers (safetensors)
    create theirs private (0600), which would make checkpoints the only unreadable files of a run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_directory(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temp folder of this process beside `path`; it becomes `path` only if the
    block succeeds, so a folder of outputs is complete or absent. An existing `path` is replaced
    with `overwrite` (only then, once the new one is complete), and refused without."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a crashed run whose pid was reused
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise UserError(f"{path} already exists (written meanwhile by another process)")
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())


def append_line(path: str | Path, line: str) -> None:
    """Append one line by rewriting the file atomically: metrics files are small, losing one is not."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    write_text(path, old + line.rstrip("\n") + "\n")
