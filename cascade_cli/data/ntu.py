"""NTU RGB+D 60 / 120: raw `.skeleton` files -> prepared dataset, reproducing the CTR-GCN preprocessing.

Every published NTU number (CTR-GCN, SGN, and the NTU60_CS.npz CascadeFormer trains on) comes from the
three CTR-GCN scripts, so this module re-implements them step for step (reference data_formats.md §1.8):

1. `parse_skeleton`  get_raw_skes_data.py: bodies keyed by bodyID, frames with 0 bodies dropped, the
                     "previous + 1" interval quirk, motion = summed per-coordinate variance.
2. `denoise`         get_raw_denoised_data.py: length and spread filters, actors by motion, the slot
                     rule for further bodies, removal of frames in which no kept body appears.
3. `translate`       seq_transformation.py's seq_translation: origin = SpineMid of actor 1's first frame.

The quirks are kept on purpose: a model trained on our arrays must see what it would see on theirs.
`export_ctr_npz` writes the de-facto standard NTU60_CS.npz-style arrays from a prepared dataset.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path

import numpy as np

from cascade_cli.atomic import atomic_path
from cascade_cli.data.format import open_dataset
from cascade_cli.data.prepare import PrepareSpec, RawClip, Rejected, prepare
from cascade_cli.data.registry import known_dataset
from cascade_cli.errors import UserError, require_directory
from cascade_cli.progress import Reporter

MAX_SETUP = {"ntu60": 17, "ntu120": 32}
MAX_SUBJECT = {"ntu60": 40, "ntu120": 106}
# Cross-subject training performers (CTR get_indices; NTU120 extends the NTU60 list).
TRAIN_SUBJECTS_60 = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
TRAIN_SUBJECTS = {"ntu60": TRAIN_SUBJECTS_60,
                  "ntu120": TRAIN_SUBJECTS_60 + (45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78,
                                                 80, 81, 82, 83, 84, 85, 86, 89, 91, 92, 93, 94, 95, 97, 98,
                                                 100, 103)}
# Protocol -> (per-clip field CTR groups the rows by, file stem of the CTR export) per version.
EXPORTS = {"ntu60": {"xsub": ("subject", "NTU60_CS"), "xview": ("camera", "NTU60_CV")},
           "ntu120": {"xsub": ("subject", "NTU120_CSub"), "xset": ("setup", "NTU120_CSet")}}

SAMPLE_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")
MISSING_REASON = "on the official missing-skeleton list"
JOINTS, ACTOR = 25, 75  # an actor is 75 columns (25 joints x, y, z) in CTR's (T, 75 or 150) arrays
LENGTH_THRESHOLD, SPREAD_RATIO, SPREAD_THRESHOLD = 11, 0.8, 0.69754
CTR_FRAMES = 300  # the pad width of CTR's arrays: the longest NTU sample


def _check_version(version: str) -> None:
    if version not in MAX_SETUP:
        raise UserError(f"unknown NTU version {version!r}; choose one of {', '.join(MAX_SETUP)}")


# ----------------------------------------------------------------------------------------------
# Step 1: the .skeleton text


@dataclass
class Body:
    joints: np.ndarray  # (n*25, 3) float32 x y z of the n frames the body is in, stacked as CTR stacks them
    colors: np.ndarray  # (n, 25, 2) float32 colorX colorY
    interval: np.ndarray  # (n,) int64 valid-frame indices: first appearance, then "previous + 1" (CTR quirk)
    motion: float | None = None  # sum over x, y, z of the variance of `joints`; only when > 1 bodyID


@dataclass
class RawSkeleton:
    name: str
    bodies: dict[str, Body]  # by bodyID string (17 digits: not exact as a float), in order of appearance
    num_frames: int  # frames with at least one body
    dropped_frames: list[int]  # 0-based file frames with 0 bodies


def parse_skeleton(path: str | Path) -> RawSkeleton:
    """Read one `.skeleton` file as CTR step 1 does; Rejected (with the line) on any malformed input.

    Only bodies and frames are walked in Python; the 25 joint lines of every body record are converted
    by one np.loadtxt call per file, which keeps the whole NTU60 archive within minutes."""
    path = Path(path)
    lines = path.read_bytes().split(b"\n")  # CRLF or LF: int(), split() and loadtxt ignore the '\r'
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise Rejected("empty file")

    def line_at(i: int, what: str) -> bytes:
        if i >= len(lines):
            raise Rejected(f"truncated: the file ends at line {len(lines)}, expected {what}")
        return lines[i]

    def integer(i: int, what: str) -> int:
        text = line_at(i, what)
        if not text.strip().isdigit():
            raise Rejected(f"line {i + 1}: expected {what}, got {text.decode(errors='replace').strip()[:40]!r}")
        return int(text)

    declared = integer(0, "the frame count")
    if declared == 0:
        raise Rejected("line 1: the header declares 0 frames")
    records: dict[str, list[int]] = {}  # bodyID -> indices of its body records
    starts, frame_of = [], []  # per body record: 0-based line of its first joint, its valid-frame index
    dropped, line = [], 1
    for frame in range(declared):
        count = integer(line, f"the body count of frame {frame + 1}")
        line += 1
        if count == 0:
            dropped.append(frame)
            continue
        in_frame = set()  # a bodyID twice in one frame would make its interval longer than the sample
        for _ in range(count):
            fields = line_at(line, "a body line").split()
            if len(fields) != 10:
                raise Rejected(f"line {line + 1}: body line has {len(fields)} fields, expected 10")
            if (joints := integer(line + 1, "the joint count")) != JOINTS:
                raise Rejected(f"line {line + 2}: jointCount is {joints}, expected {JOINTS}")
            body_id = fields[0].decode(errors="replace")
            if body_id in in_frame:
                raise Rejected(f"line {line + 1}: bodyID {body_id} appears twice in frame {frame + 1}")
            in_frame.add(body_id)
            records.setdefault(body_id, []).append(len(starts))
            starts.append(line + 2)
            frame_of.append(frame - len(dropped))
            line += 2 + JOINTS
    if line > len(lines):
        raise Rejected(f"truncated: the file ends at line {len(lines)} inside the joints of frame {declared}")
    if line < len(lines):
        raise Rejected(f"line {line + 1}: content after the {declared} frames the header declares")
    if not starts:
        raise Rejected(f"all {declared} frames have 0 bodies")

    values = _joint_values(lines, starts)  # (records, 25, 12) float64
    xyz, rgb = values[..., :3].astype(np.float32), values[..., 5:7].astype(np.float32)
    bad = ~(np.isfinite(xyz).all(-1) & np.isfinite(rgb).all(-1))  # (records, 25)
    if bad.any():
        record, joint = np.argwhere(bad)[0]
        raise Rejected(f"line {starts[record] + joint + 1}: non-finite coordinate (NaN or inf)")
    bodies = {body_id: Body(joints=xyz[rows].reshape(-1, 3), colors=rgb[rows],
                            interval=frame_of[rows[0]] + np.arange(len(rows)))
              for body_id, rows in records.items()}
    if len(bodies) > 1:
        for body in bodies.values():
            body.motion = float(np.var(body.joints, axis=0).sum())
    return RawSkeleton(path.stem, bodies, declared - len(dropped), dropped)


def _joint_values(lines: list[bytes], starts: list[int]) -> np.ndarray:  # (records, 25, 12) float64
    block = [text for start in starts for text in lines[start:start + JOINTS]]
    try:
        values = np.loadtxt(block, ndmin=2, comments=None)
        if values.shape == (len(block), 12):
            return values.reshape(len(starts), JOINTS, 12)
    except ValueError:
        pass
    # The fast path failed: find the first bad line to name it. Only bad files get here.
    for start in starts:
        for i in range(start, start + JOINTS):
            fields = lines[i].split()
            if len(fields) != 12:
                raise Rejected(f"line {i + 1}: joint line has {len(fields)} fields, expected 12")
            try:
                list(map(float, fields))
            except ValueError:
                text = lines[i].decode(errors="replace").strip()[:60]
                raise Rejected(f"line {i + 1}: non-numeric value in {text!r}") from None
    raise Rejected("joint lines cannot be parsed as numbers")


# ----------------------------------------------------------------------------------------------
# Step 2: bodies -> actors


def denoise(raw: RawSkeleton) -> tuple[np.ndarray, dict]:
    """CTR step 2: joints (T, 75) for one actor or (T, 150) for two, plus what happened to each body.

    A single-bodyID sample is taken as is. Otherwise bodies in <= 11 frames go, then bodies whose frames
    are mostly wider than tall (furniture, reflections) go, and the surviving bodies fill two actor
    slots in order of motion; frames in which no kept body appears are removed."""
    bodies, T = raw.bodies, raw.num_frames
    info = {"dropped": {}, "motion": {}, "actors": ([], []), "removed_frames": 0}
    if len(bodies) == 1:
        (body_id, body), = bodies.items()
        joints = np.zeros((T, ACTOR), np.float32)
        joints[body.interval[0]:body.interval[-1] + 1] = body.joints.reshape(-1, ACTOR)
        info["actors"][0].append(body_id)
        return joints, info

    kept = {}
    for body_id, body in bodies.items():
        if len(body.interval) <= LENGTH_THRESHOLD:
            info["dropped"][body_id] = f"in {len(body.interval)} frames (<= {LENGTH_THRESHOLD})"
        else:
            kept[body_id] = body
    motion = {body_id: body.motion for body_id, body in kept.items()}
    for body_id, body in list(kept.items()):
        if len(kept) == 1:
            break
        frames = body.joints.reshape(-1, JOINTS, 3)
        spread_x = frames[..., 0].max(1) - frames[..., 0].min(1)
        spread_y = frames[..., 1].max(1) - frames[..., 1].min(1)
        valid = spread_x <= SPREAD_RATIO * spread_y  # (n,)
        ratio = (len(valid) - valid.sum()) / len(valid)
        if ratio >= SPREAD_THRESHOLD:
            del kept[body_id], motion[body_id]
            info["dropped"][body_id] = f"{ratio:.0%} of its frames wider than {SPREAD_RATIO} x their height"
        elif ratio > 0:
            motion[body_id] = min(motion[body_id], float(np.var(frames[valid].reshape(-1, 3), axis=0).sum()))
    if not kept:
        raise Rejected(f"denoising removed every body ({len(bodies)} bodies, none in more than "
                       f"{LENGTH_THRESHOLD} frames)")
    order = sorted(kept, key=motion.get, reverse=True)  # stable: ties keep the order of appearance
    info["motion"] = motion

    joints = np.zeros((T, ACTOR * min(len(order), 2)), np.float32)
    slots = [None, (0, 0)]  # [start, end] of each actor slot; actor 2 starts as [0, 0] in CTR
    for body_id in order:
        body = kept[body_id]
        start, end = int(body.interval[0]), int(body.interval[-1])
        # "<= 0": bodies touching in a single frame do not overlap; the later one overwrites that frame.
        free = [slot is None or min(slot[1], end) - max(slot[0], start) <= 0 for slot in slots]
        if not any(free):
            info["dropped"][body_id] = "overlaps both actors"
            continue
        actor = free.index(True)
        joints[start:end + 1, ACTOR * actor:ACTOR * (actor + 1)] = body.joints.reshape(-1, ACTOR)
        old = slots[actor] or (start, end)
        slots[actor] = (min(start, old[0]), max(end, old[1]))
        info["actors"][actor].append(body_id)
    present = joints.any(axis=1)
    info["removed_frames"] = int(T - present.sum())
    return joints[present], info


# ----------------------------------------------------------------------------------------------
# Step 3: translation


def translate(joints: np.ndarray) -> np.ndarray:
    """CTR seq_translation: subtract SpineMid (joint index 1) of actor 1 in its first non-zero frame from
    every joint; frames where an actor is absent stay exactly zero, so padding stays recognisable.

    (T, 75 or 150) -> same shape."""
    actors = joints.reshape(len(joints), -1, ACTOR)  # (T, M, 75)
    present = actors.any(axis=2)  # (T, M)
    if not present[:, 0].any():
        raise Rejected("actor 1 is zero in every frame")
    origin = actors[present[:, 0].argmax(), 0, 3:6]
    moved = actors - np.tile(origin, JOINTS)
    return np.where(present[..., None], moved, np.float32(0)).reshape(joints.shape)


# ----------------------------------------------------------------------------------------------
# The runner's parser


def parse_ntu_file(path: str, version: str = "ntu60") -> RawClip:
    """One `SsssCcccPpppRrrrAaaa.skeleton` file -> RawClip (T, M = 1 or 2, 25, 3) in CTR's actor order."""
    match = SAMPLE_NAME.fullmatch(Path(path).stem) if Path(path).suffix == ".skeleton" else None
    if not match:
        raise Rejected("file name does not match SsssCcccPpppRrrrAaaa.skeleton")
    setup, camera, subject, replication, action = map(int, match.groups())
    dataset = known_dataset(version)
    if not 1 <= action <= dataset.num_classes:
        raise Rejected(f"action A{action:03d} is not one of the {dataset.num_classes} {version} classes")
    raw = parse_skeleton(path)
    joints, info = denoise(raw)
    joints = translate(joints)
    warnings = []
    if raw.dropped_frames:
        warnings.append(f"dropped {len(raw.dropped_frames)} frames with 0 bodies")
    if info["removed_frames"]:
        warnings.append(f"removed {info['removed_frames']} frames in which no kept body appears")
    # The two-person classes only serve to warn when denoising kept the wrong number of actors.
    actors, expected = joints.shape[1] // ACTOR, 2 if action - 1 in dataset.two_person_classes else 1
    if actors != expected:
        warnings.append(f"denoising kept {actors} actor(s) for a {expected}-person action")
    return RawClip(frames=joints.reshape(len(joints), actors, JOINTS, 3), label=action - 1, name=match.group(0),
                   subject=subject, camera=camera, setup=setup, extra={"replication": replication},
                   warnings=warnings)


# ----------------------------------------------------------------------------------------------
# Metadata: missing samples and protocols


def read_sample_names(path: str | Path) -> set[str]:
    """Sample names in a list file; header, blank and other lines (the official lists start with two
    English sentences and a blank line) are ignored."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror})") from None
    return {line.strip() for line in text.splitlines() if SAMPLE_NAME.fullmatch(line.strip())}


def missing_samples(version: str, extra_file: str | Path | None = None) -> set[str]:
    """The official missing-skeleton list of `version` (shipped with the package), plus names in extra_file."""
    _check_version(version)
    with resources.as_file(resources.files("cascade_cli") / "data" / "resources" / f"{version}_missing.txt") as path:
        names = read_sample_names(path)
    return names | (read_sample_names(extra_file) if extra_file is not None else set())


def ntu_protocols(version: str, meta: dict[str, np.ndarray]) -> dict[str, tuple[str, np.ndarray]]:
    """The standard benchmarks as membership arrays (0 train, 1 test, -1 outside the protocol)."""
    subject, camera, setup = (np.asarray(meta[key]) for key in ("subject", "camera", "setup"))

    def split(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        return np.where(train, 0, np.where(test, 1, -1)).astype(np.int8)

    descriptions = known_dataset(version).protocols
    protocols = {"xsub": (descriptions["xsub"], split(np.isin(subject, TRAIN_SUBJECTS[version]),
                                                      (subject >= 1) & (subject <= MAX_SUBJECT[version])))}
    if version == "ntu60":
        protocols["xview"] = (descriptions["xview"], split(np.isin(camera, (2, 3)), camera == 1))
    else:
        in_range = (setup >= 1) & (setup <= MAX_SETUP[version])
        protocols["xset"] = (descriptions["xset"], split(in_range & (setup % 2 == 0), in_range & (setup % 2 == 1)))
    return protocols


# ----------------------------------------------------------------------------------------------
# CTR-style npz export


def export_ctr_npz(dataset_dir: str | Path, dest: str | Path, version: str) -> list[Path]:
    """Write CTR's `NTU60_CS.npz`-style files (x_train (N, F, 150) float32, y_train (N, classes) one-hot
    float64, x_test, y_test) for every protocol of a prepared NTU dataset.

    As in CTR align_frames, F is the longest clip, at least 300 (CTR pads to the dataset's longest, which
    is 300 for the full NTU), and a one-actor clip gets zeros in columns 75-149 for ntu60 but a copy of
    actor 1 for ntu120. Rows are in CTR's get_indices order: grouped by subject (camera, setup)
    ascending, then in name order. Each x array is streamed into the zip one clip at a time, so memory
    stays at one clip whatever the dataset size; files appear atomically."""
    dataset = open_dataset(dataset_dir)
    frames = max(CTR_FRAMES, int(dataset.lengths.max()))
    persons = dataset.meta("persons")
    written = []
    for protocol, (field, stem) in EXPORTS[version].items():
        key = dataset.meta(field)
        path = Path(dest) / f"{stem}.npz"
        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
            for part in ("train", "test"):
                rows = dataset.split_indices(protocol, part)
                rows = rows[np.argsort(key[rows], kind="stable")]
                with archive.open(zipfile.ZipInfo(f"x_{part}.npy"), "w", force_zip64=True) as member:
                    np.lib.format.write_array_header_1_0(
                        member, {"descr": "<f4", "fortran_order": False, "shape": (len(rows), frames, 150)})
                    for i in rows:
                        clip = dataset.clip(i)  # (T, 2, 25, 3)
                        if version == "ntu120" and persons[i] == 1:
                            clip[:, 1] = clip[:, 0]
                        padded = np.zeros((frames, 150), "<f4")
                        padded[:len(clip)] = clip.reshape(len(clip), 150)
                        member.write(padded.tobytes())
                labels = np.zeros((len(rows), dataset.num_classes))
                labels[np.arange(len(rows)), dataset.labels[rows]] = 1
                with archive.open(zipfile.ZipInfo(f"y_{part}.npy"), "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, labels, allow_pickle=False)
        written.append(path)
    return written


# ----------------------------------------------------------------------------------------------
# The command


def prepare_ntu(raw_dir: str | Path, out_dir: str | Path, version: str = "ntu60", *, workers: int | None = None,
                strict: bool = False, overwrite: bool = False, export_npz: str | Path | None = None,
                missing_list: str | Path | None = None, reporter: Reporter | None = None) -> dict:
    """Prepare every `*.skeleton` under raw_dir (searched recursively) as NTU60 or NTU120.

    Files of other setups and those on the official missing-skeleton list (plus names in missing_list)
    are skipped and reported. With export_npz, CTR-style npz files are also written into that folder."""
    _check_version(version)
    raw_dir = Path(raw_dir)
    require_directory(raw_dir, "folder of raw .skeleton files")
    files = sorted(raw_dir.rglob("*.skeleton"), key=lambda p: (p.name, str(p)))  # name order = CTR order
    if not files:
        raise UserError(f"{raw_dir}: no .skeleton files found")
    missing = missing_samples(version, missing_list)
    sources, skipped, seen = [], [], {}
    for file in files:
        match = SAMPLE_NAME.fullmatch(file.stem)
        if file.name in seen:
            skipped.append((str(file), f"duplicate of {seen[file.name]}"))
        elif match and not 1 <= int(match[1]) <= MAX_SETUP[version]:
            skipped.append((str(file), f"setup not in {version} (S001-S{MAX_SETUP[version]:03d})"))
        elif file.stem in missing:
            skipped.append((str(file), MISSING_REASON))
        else:
            sources.append(str(file))
        seen.setdefault(file.name, file)
    spec = PrepareSpec.for_dataset(known_dataset(version), partial(ntu_protocols, version),
                                   extra_fields={"replication": np.int32})
    finalize = partial(export_ctr_npz, dest=export_npz, version=version) if export_npz is not None else None
    return prepare(spec, sources, partial(parse_ntu_file, version=version), out_dir, raw_dir=str(raw_dir),
                   workers=workers, strict=strict, overwrite=overwrite, skipped=skipped, reporter=reporter,
                   finalize=finalize)
