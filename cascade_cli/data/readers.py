"""Small readers shared by the Penn Action, N-UCLA and custom preparers.

They turn the ways a raw file can be broken into `Rejected` with a one-line reason, because the batch
runner treats any other exception from a parser as a bug.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cascade_cli.data.prepare import Rejected
from cascade_cli.errors import require_directory


def source_files(raw_dir: str | Path, suffixes: tuple[str, ...], subdir: str | None = None) -> list[str]:
    """Sorted files with one of `suffixes` in `raw_dir/subdir`, or in `raw_dir` itself when it has no
    such subfolder: users point at either the dataset root or the folder of annotation files."""
    root = Path(raw_dir)
    folder = root / subdir if subdir and (root / subdir).is_dir() else root
    require_directory(folder, "folder of raw files")
    return sorted(str(p) for p in folder.iterdir() if p.suffix in suffixes and p.is_file())


def load_json(path: str | Path) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise Rejected(f"malformed JSON ({exc})") from None


def as_float(value, what: str) -> np.ndarray:  # float64, any shape
    """Numbers (nested lists or any array) as float64; casting first because unsigned integer arrays
    (Penn's uint8/uint16 coordinates) wrap around on subtraction."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError) as exc:  # ragged lists, strings, objects
        raise Rejected(f"{what} is not a numeric array ({exc})") from None
