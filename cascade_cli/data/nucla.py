"""Northwestern-UCLA (N-UCLA) from the CTR-GCN `all_sqe` JSON set: 3-D Kinect v1, 20 joints, 1 person.

Clips keep their camera-space metres; centring and normalisation belong to the training pipeline.
Subject, view and repetition come from the file name aAA_sSS_eEE_vVV and are stored as the clip's
subject, camera (1..3) and setup (0..10), so the cross-view protocol is computed from metadata.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np

from cascade_cli.data.prepare import PrepareSpec, RawClip, Rejected, prepare
from cascade_cli.data.readers import as_float, load_json, source_files
from cascade_cli.data.registry import NW_UCLA

# The action id (aAA of the file name) of JSON labels 1..10; ids a07 and a10 do not occur in the data.
NUCLA_ACTION_IDS = (1, 2, 3, 4, 5, 6, 8, 9, 11, 12)
NAME = re.compile(r"a(\d\d)_s(\d\d)_e(\d\d)_v(\d\d)")


def parse_nucla_file(path: str, joint_order: str = "kinect") -> RawClip:
    """joint_order: "kinect" (Kinect v1 order, as in the files) or "official" (see the registry's NW_UCLA)."""
    stem = Path(path).stem
    if not (match := NAME.fullmatch(stem)):
        raise Rejected("file name does not match aAA_sSS_eEE_vVV")
    action, subject, repetition, view = map(int, match.groups())
    data = load_json(path)
    if not isinstance(data, dict):
        raise Rejected("expected a JSON object with file_name, skeletons and label")
    if missing := {"file_name", "skeletons", "label"} - set(data):
        raise Rejected(f"missing key(s) {', '.join(sorted(missing))}")
    label = data["label"]
    if type(label) is not int or not 1 <= label <= NW_UCLA.num_classes:
        raise Rejected(f"label {label!r} is not an integer in 1..{NW_UCLA.num_classes}")
    joints = as_float(data["skeletons"], "skeletons")  # (T, 20, 3)
    if joints.ndim != 3 or joints.shape[0] < 1 or joints.shape[1:] != (NW_UCLA.layout.num_joints, 3):
        raise Rejected(f"skeletons of shape {joints.shape}, expected [T >= 1][20][3]")

    warnings = []
    if data["file_name"] != stem:
        warnings.append(f"file_name '{data['file_name']}' differs from the file's name")
    if action not in NUCLA_ACTION_IDS or NUCLA_ACTION_IDS.index(action) + 1 != label:
        warnings.append(f"label {label} does not match action id a{action:02d}; used the label")
    if zeros := int((joints == 0).all(axis=-1).sum()):
        warnings.append(f"{zeros} joint position(s) are exactly (0, 0, 0)")
    source_joints = list(NW_UCLA.joint_order(joint_order).source)
    return RawClip(frames=joints[:, None, source_joints].astype(np.float32),  # (T, 1, 20, 3)
                   label=label - 1, name=stem, subject=subject, camera=view, setup=repetition, warnings=warnings)


def _cross_view(meta: dict[str, np.ndarray]) -> dict[str, tuple[str, np.ndarray]]:
    view = meta["camera"]
    membership = np.select([np.isin(view, (1, 2)), view == 3], [0, 1], -1).astype(np.int8)
    return {"cross_view": (NW_UCLA.protocols["cross_view"], membership)}


def prepare_nucla(raw_dir: str | Path, out_dir: str | Path, *, joint_order: str = "kinect",
                  workers: int | None = None, strict: bool = False, overwrite: bool = False, reporter=None) -> dict:
    """raw_dir: the folder holding all_sqe/, or all_sqe/ itself."""
    spec = PrepareSpec.for_dataset(NW_UCLA, _cross_view, layout=NW_UCLA.joint_order(joint_order).layout)
    return prepare(spec, source_files(raw_dir, (".json",), "all_sqe"),
                   functools.partial(parse_nucla_file, joint_order=joint_order), out_dir, raw_dir=str(raw_dir),
                   workers=workers, strict=strict, overwrite=overwrite, reporter=reporter)
