"""Penn Action (Zhang et al., ICCV 2013): one MATLAB file per video with 13 2-D joints in pixels.

Frames keep raw pixel coordinates, as CascadeFormer feeds them; the per-joint visibility is kept as the
dataset's confidence instead of zeroing invisible joints here, so the training pipeline decides (the
official code zeroes them). The `bbox` field is not read: it is one row short in 1154.mat and 1865.mat.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from cascade_cli.data.prepare import PrepareSpec, RawClip, Rejected, prepare
from cascade_cli.data.readers import as_float, source_files
from cascade_cli.data.registry import PENN_ACTION

PENN_VIEWS = ("back", "front", "left", "right")  # the `pose` field, stored as the clip's camera 0..3
FIELDS = ("action", "x", "y", "visibility", "train", "dimensions", "nframes")


def _scalar(value, key: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Rejected(f"field '{key}' is not a single number") from None


def parse_penn_file(path: str) -> RawClip:
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as exc:  # scipy raises many types (ValueError, MatReadError, OSError, zlib.error...)
        raise Rejected(f"unreadable .mat file ({type(exc).__name__}: {exc})") from None
    if missing := [key for key in FIELDS if key not in mat]:
        raise Rejected(f"missing field(s) {', '.join(missing)}")

    T = _scalar(mat["nframes"], "nframes")
    # squeeze_me turns a 1-frame (1, 13) array into (13,); atleast_2d undoes that.
    x, y, visibility = (np.atleast_2d(as_float(mat[key], key)) for key in ("x", "y", "visibility"))  # (T, 13)
    J = PENN_ACTION.layout.num_joints
    for key, array in (("x", x), ("y", y), ("visibility", visibility)):
        if array.shape != (T, J):
            raise Rejected(f"'{key}' has shape {array.shape}, expected (nframes={T}, {J})")
    if not np.isin(visibility, (0, 1)).all():
        raise Rejected("'visibility' holds values other than 0 and 1")
    action = str(mat["action"])
    if action not in PENN_ACTION.class_names:
        raise Rejected(f"unknown action '{action}'")
    train = _scalar(mat["train"], "train")
    if train not in (1, -1):
        raise Rejected(f"'train' is {train}, expected +1 (train) or -1 (test)")
    dims = np.atleast_1d(as_float(mat["dimensions"], "dimensions"))
    if dims.shape != (3,) or not np.isfinite(dims).all():
        raise Rejected(f"'dimensions' has shape {dims.shape}, expected (3,) = [height, width, nframes]")
    height, width, dim_frames = (int(d) for d in dims)

    warnings = []
    if dim_frames != T:
        warnings.append(f"dimensions say {dim_frames} frames, nframes says {T}; used nframes")
    pose = str(mat.get("pose", ""))
    if pose not in PENN_VIEWS:
        warnings.append(f"unknown pose '{pose}'; camera set to -1")
    return RawClip(
        frames=np.stack([x, y], axis=-1)[:, None].astype(np.float32),  # (T, 1, 13, 2)
        label=PENN_ACTION.class_names.index(action), name=Path(path).stem,
        camera=PENN_VIEWS.index(pose) if pose in PENN_VIEWS else -1,
        confidence=visibility[:, None].astype(np.float32),  # (T, 1, 13)
        extra={"width": width, "height": height, "official_train": train}, warnings=warnings)


def _official_protocol(meta: dict[str, np.ndarray]) -> dict[str, tuple[str, np.ndarray]]:
    membership = np.where(meta["official_train"] == 1, 0, 1).astype(np.int8)
    return {"official": (PENN_ACTION.protocols["official"], membership)}


def prepare_penn(raw_dir: str | Path, out_dir: str | Path, *, workers: int | None = None, strict: bool = False,
                 overwrite: bool = False, reporter=None) -> dict:
    """raw_dir: the Penn_Action root (holding labels/) or the labels/ folder itself."""
    spec = PrepareSpec.for_dataset(PENN_ACTION, _official_protocol,
                                   extra_fields={"width": np.int32, "height": np.int32, "official_train": np.int8})
    return prepare(spec, source_files(raw_dir, (".mat",), "labels"), parse_penn_file, out_dir, raw_dir=str(raw_dir),
                   workers=workers, strict=strict, overwrite=overwrite, reporter=reporter)
