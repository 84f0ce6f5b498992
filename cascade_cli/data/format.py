"""The prepared-dataset format every converter writes and the trainer reads.

A prepared dataset is one directory:

    dataset.yaml   manifest: name, skeleton layout, classes, protocols, counts, array checksums
    frames.f32     every frame of every clip back to back, raw float32 [total_frames, M, J, C]
    confidence.f32 optional, per-joint confidence or visibility, float32 [total_frames, M, J]
    clips.npz      one row per clip: offset, length, label, persons, subject, camera, setup, name,
                   and split.<protocol> (0 train, 1 test, -1 not in that protocol)

Frames live in one headerless file so that training memory-maps datasets larger than RAM and a clip
is a slice, with no parsing; everything per clip is small and loaded eagerly. Absent persons are
zeros, as in the CTR-GCN arrays, so M is the same for every clip. Checksums cover each array's raw
bytes and are only recomputed on request (`verify`), because hashing gigabytes on every open would
dominate short runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from cascade_cli import __version__
from cascade_cli.atomic import atomic_path
from cascade_cli.errors import UserError, require_directory
from cascade_cli.layouts import Layout

FORMAT_VERSION = 1
MANIFEST, FRAMES, CLIPS, CONFIDENCE = "dataset.yaml", "frames.f32", "clips.npz", "confidence.f32"
VERIFIED = ".verified.json"  # the size and mtime of every array file when their checksums last passed
SPLIT_CODES = {"train": 0, "test": 1}
# Per-clip integer fields and their stored dtypes; `name` (unicode) and the split.* arrays join them.
CLIP_FIELDS = {"offset": np.int64, "length": np.int32, "label": np.int32, "persons": np.int8,
               "subject": np.int32, "camera": np.int32, "setup": np.int32}


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez, but with a fixed member timestamp: np.savez stamps the wall clock into the zip, so the
    same data written twice would differ byte for byte."""
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in arrays.items():
            with archive.open(zipfile.ZipInfo(f"{key}.npy"), "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


# ----------------------------------------------------------------------------------------------
# Writing


class DatasetWriter:
    """Streams clips to disk and publishes the dataset only once it is complete.

    Everything is written into ``<out_dir>.tmp-<pid>`` and renamed to ``out_dir`` on a clean exit from
    the ``with`` block; on an exception the temporary directory is removed. A conversion killed halfway
    therefore leaves either no dataset or the previous one, never a truncated one that would train.
    """

    def __init__(self, out_dir: str | Path, name: str, layout: Layout, persons: int,
                 class_names: Sequence[str], overwrite: bool = False, confidence: bool = False,
                 extra_fields: dict[str, type] | None = None):
        """confidence: clips carry a per-joint confidence (or 0/1 visibility) beside the coordinates.
        extra_fields: further numeric per-clip fields, e.g. {"width": np.int32} for image sizes."""
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not (overwrite and self.out_dir.is_dir()):
            raise UserError(f"{self.out_dir} already exists; choose another output directory or overwrite it")
        if persons < 1 or not class_names or len(set(class_names)) != len(class_names):
            raise ValueError(f"dataset {name}: need persons >= 1 and unique class names")
        self.name, self.layout, self.persons = name, layout, persons
        self.class_names = [str(c) for c in class_names]
        self.overwrite = overwrite
        self.tmp_dir = self.out_dir.with_name(f"{self.out_dir.name}.tmp-{os.getpid()}")
        self.extra_fields = dict(extra_fields or {})
        if clash := set(self.extra_fields) & {*CLIP_FIELDS, "name"}:
            raise ValueError(f"dataset {name}: extra field {sorted(clash)[0]!r} shadows a standard clip field")
        self.with_confidence = confidence
        self._clips: dict[str, list] = {field: [] for field in (*CLIP_FIELDS, *self.extra_fields, "name")}
        self._files: dict[str, str] = {}
        self._protocols: dict[str, tuple[str, np.ndarray]] = {}
        self._frames_hash = hashlib.sha256()
        self._total_frames = 0

    def __enter__(self) -> DatasetWriter:
        shutil.rmtree(self.tmp_dir, ignore_errors=True)  # left by a crashed run whose pid was reused
        self.tmp_dir.mkdir(parents=True)
        self._frames_file = open(self.tmp_dir / FRAMES, "wb")
        self._confidence_file = open(self.tmp_dir / CONFIDENCE, "wb") if self.with_confidence else None
        self._confidence_hash = hashlib.sha256()
        return self

    def add_clip(self, frames: np.ndarray, label: int, name: str, subject: int = -1, camera: int = -1,
                 setup: int = -1, confidence: np.ndarray | None = None, extra: dict | None = None) -> None:
        """Append one clip; frames is [T, M', J, C] with M' <= persons, missing persons are zero-filled.
        confidence [T, M', J] is required exactly when the writer was made with confidence=True."""
        frames = np.asarray(frames, dtype=np.float32)
        J, C = self.layout.num_joints, self.layout.coords
        if frames.ndim != 4 or frames.shape[0] < 1 or not 1 <= frames.shape[1] <= self.persons \
                or frames.shape[2:] != (J, C):
            raise ValueError(f"clip {name}: frames have shape {frames.shape}, "
                             f"expected [T >= 1, 1..{self.persons}, {J}, {C}]")
        if not 0 <= label < len(self.class_names):
            raise ValueError(f"clip {name}: label {label} is not in 0..{len(self.class_names) - 1}")
        if not np.isfinite(frames).all():
            raise UserError(f"clip {name}: contains non-finite coordinates (NaN or inf)")
        T, M = frames.shape[:2]
        if (confidence is None) == self.with_confidence:
            raise ValueError(f"clip {name}: confidence {'missing' if self.with_confidence else 'given'}, "
                             f"but the dataset was declared with confidence={self.with_confidence}")
        extra = extra or {}
        if set(extra) != set(self.extra_fields):
            raise ValueError(f"clip {name}: extra fields {sorted(extra)} != declared {sorted(self.extra_fields)}")
        if confidence is not None:
            confidence = np.asarray(confidence, dtype=np.float32)
            if confidence.shape != (T, M, J) or not np.isfinite(confidence).all():
                raise ValueError(f"clip {name}: confidence must be finite with shape {(T, M, J)}, got {confidence.shape}")
            padded_conf = np.zeros((T, self.persons, J), np.float32)
            padded_conf[:, :M] = confidence
            self._write(self._confidence_file, self._confidence_hash, padded_conf)
        padded = np.zeros((T, self.persons, J, C), np.float32)
        padded[:, :M] = frames
        self._write(self._frames_file, self._frames_hash, padded)
        for field, value in zip((*CLIP_FIELDS, "name"),
                                (self._total_frames, T, label, M, subject, camera, setup, str(name))):
            self._clips[field].append(value)
        for field, value in extra.items():
            self._clips[field].append(value)
        self._total_frames += T

    @staticmethod
    def _write(file, digest, array: np.ndarray) -> None:
        data = array.tobytes()
        file.write(data)
        digest.update(data)

    def add_file(self, name: str, text: str) -> None:
        """A side file (e.g. prepare_report.json) published together with the dataset."""
        if name in (MANIFEST, FRAMES, CLIPS, CONFIDENCE) or "/" in name:
            raise ValueError(f"side file name {name!r} is reserved or not a plain file name")
        self._files[name] = text

    def set_protocol(self, name: str, description: str, membership: Sequence[int] | np.ndarray) -> None:
        """membership[i] is 0 (train), 1 (test) or -1 (unused) for the i-th added clip."""
        membership = np.asarray(membership, dtype=np.int8)
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ValueError(f"protocol name {name!r}: use letters, digits, '_' or '-'")
        if membership.ndim != 1 or not np.isin(membership, (-1, 0, 1)).all():
            raise ValueError(f"protocol {name}: membership must be a 1-D array of -1, 0 or 1")
        self._protocols[name] = (description, membership)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._frames_file.close()
            if self._confidence_file is not None:
                self._confidence_file.close()
            if exc_type is None:
                self._publish()
        finally:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)  # already renamed away after a publish

    def _publish(self) -> None:
        n = len(self._clips["label"])
        if n == 0:
            raise ValueError(f"{self.out_dir}: no clips were added")
        clips = {field: np.asarray(self._clips[field], dtype=dtype)
                 for field, dtype in {**CLIP_FIELDS, **self.extra_fields}.items()}
        clips["name"] = np.asarray(self._clips["name"], dtype=str)
        protocols = {}
        for protocol, (description, membership) in self._protocols.items():
            if len(membership) != n:
                raise ValueError(f"protocol {protocol}: membership has {len(membership)} entries for {n} clips")
            clips[f"split.{protocol}"] = membership
            counts = {part: int((membership == code).sum()) for part, code in SPLIT_CODES.items()}
            protocols[protocol] = {"description": description, "counts": counts}
        _save_npz(self.tmp_dir / CLIPS, clips)

        frames_shape = [self._total_frames, self.persons, self.layout.num_joints, self.layout.coords]
        arrays = {"frames": {"file": FRAMES, "dtype": "float32", "shape": frames_shape,
                             "sha256": self._frames_hash.hexdigest()}}
        if self.with_confidence:
            arrays["confidence"] = {"file": CONFIDENCE, "dtype": "float32", "shape": frames_shape[:3],
                                    "sha256": self._confidence_hash.hexdigest()}
        for key, value in clips.items():
            arrays[key] = {"file": CLIPS, "dtype": value.dtype.str, "shape": list(value.shape),
                           "sha256": _sha256(value)}
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "layout": self.layout.to_dict(),
            "persons": self.persons,
            "class_names": self.class_names,
            "protocols": protocols,
            "counts": {"clips": n, "frames": self._total_frames},
            "extra_fields": sorted(self.extra_fields),
            "arrays": arrays,
            "created_by": f"cascade {__version__}",
        }
        for name, text in self._files.items():
            (self.tmp_dir / name).write_text(text)
        # The manifest is written last: a directory without one is never mistaken for a dataset.
        (self.tmp_dir / MANIFEST).write_text(yaml.safe_dump(manifest, sort_keys=False))

        if self.out_dir.exists():
            if not self.overwrite:
                raise UserError(f"{self.out_dir} already exists; choose another output directory or overwrite it")
            old_dir = self.out_dir.with_name(f"{self.out_dir.name}.old-{os.getpid()}")
            self.out_dir.rename(old_dir)
            self.tmp_dir.rename(self.out_dir)
            shutil.rmtree(old_dir)
        else:
            self.tmp_dir.rename(self.out_dir)


# ----------------------------------------------------------------------------------------------
# Reading


class PreparedDataset:
    """An opened prepared dataset: per-clip metadata in memory, frames memory-mapped on first use."""

    def __init__(self, path: Path, manifest: dict, clips: dict[str, np.ndarray]):
        self.path = path
        self.manifest = manifest
        self.name: str = manifest["name"]
        self.layout = Layout.from_dict(manifest["layout"])
        self.persons: int = int(manifest["persons"])
        self.class_names: list[str] = [str(c) for c in manifest["class_names"]]
        self.protocols: dict[str, dict] = manifest["protocols"]
        self._clips = clips
        self.extra_fields: list[str] = list(manifest.get("extra_fields", []))
        self.has_confidence = "confidence" in manifest["arrays"]
        self._frames: np.memmap | None = None
        self._confidence: np.memmap | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_clips(self) -> int:
        return len(self.labels)

    # Per-clip arrays of clips.npz: int64 labels, lengths and offsets (in frames), and str names.
    labels = property(lambda self: self._clips["label"])
    lengths = property(lambda self: self._clips["length"])
    offsets = property(lambda self: self._clips["offset"])
    names = property(lambda self: self._clips["name"])

    def meta(self, field: str) -> np.ndarray:
        """One per-clip array by name: offset, length, label, persons, subject, camera, setup, name, and
        the dataset's extra fields."""
        known = [*CLIP_FIELDS, *self.extra_fields, "name"]
        if field not in known:
            raise KeyError(f"unknown clip field {field!r}; known: {', '.join(known)}")
        return self._clips[field]

    @property
    def frames(self) -> np.memmap:  # [total_frames, M, J, C]
        if self._frames is None:
            spec = self.manifest["arrays"]["frames"]
            self._frames = np.memmap(self.path / FRAMES, dtype=np.float32, mode="r", shape=tuple(spec["shape"]))
        return self._frames

    def __getstate__(self) -> dict:
        # A memmap pickles as an in-memory copy of the whole file; DataLoader workers started with
        # "spawn" would each receive one. Reopen the map in the worker instead.
        return {**self.__dict__, "_frames": None, "_confidence": None}

    def clip(self, i: int) -> np.ndarray:  # [T, M, J, C]
        start = int(self.offsets[i])
        return np.array(self.frames[start:start + int(self.lengths[i])])

    def clip_confidence(self, i: int) -> np.ndarray | None:  # [T, M, J], or None without confidence
        if not self.has_confidence:
            return None
        if self._confidence is None:
            shape = tuple(self.manifest["arrays"]["confidence"]["shape"])
            self._confidence = np.memmap(self.path / CONFIDENCE, dtype=np.float32, mode="r", shape=shape)
        start = int(self.offsets[i])
        return np.array(self._confidence[start:start + int(self.lengths[i])])

    def resolve_protocol(self, protocol: str) -> str:
        """The protocol to use: the one named, or the only one when none is named."""
        available = ", ".join(self.protocols) or "(none)"
        if protocol == "":
            if len(self.protocols) == 1:
                return next(iter(self.protocols))
            raise UserError(f"dataset {self.path} has protocols {available}; choose one with data.protocol")
        if protocol not in self.protocols:
            raise UserError(f"dataset {self.path} has no protocol '{protocol}'; available: {available}")
        return protocol

    def split_indices(self, protocol: str, part: str) -> np.ndarray:  # int64 clip indices
        if part not in SPLIT_CODES:
            raise ValueError(f"part must be one of {', '.join(SPLIT_CODES)}, got {part!r}")
        membership = self._clips[f"split.{self.resolve_protocol(protocol)}"]
        return np.flatnonzero(membership == SPLIT_CODES[part]).astype(np.int64)

    def check_before_use(self) -> None:
        """Refuse a damaged dataset before a long job reads it: every checksum, and every frame finite.

        Hashing a large dataset takes a while, so a pass is remembered in `.verified.json` keyed by
        the size and modification time of every array file; unchanged files are not read again. A
        read-only dataset is checked every time.
        """
        files = sorted({spec["file"] for spec in self.manifest["arrays"].values()})
        key = {name: [(st := (self.path / name).stat()).st_size, st.st_mtime_ns] for name in files}
        stamp = self.path / VERIFIED
        try:
            if json.loads(stamp.read_text()) == key:
                return
        except (OSError, ValueError):
            pass
        problems = self.verify() or self.non_finite()
        if problems:
            raise UserError(f"{problems[0]}; the dataset is damaged: prepare it again (`cascade data info "
                            f"{self.path}` lists every problem)")
        try:
            with atomic_path(stamp) as tmp:
                tmp.write_text(json.dumps(key))
        except OSError:
            pass  # a dataset on a read-only medium: verified again next time

    def non_finite(self) -> list[str]:
        """Clips whose frames hold NaN or inf (prepare rejects them, but a writer of its own may not)."""
        frames, chunk = self.frames, 1 << 16  # frames at a time: bounded memory for any dataset size
        for start in range(0, len(frames), chunk):
            block = frames[start:start + chunk]
            finite = np.isfinite(block).reshape(len(block), -1).all(axis=1)
            if not finite.all():
                first = start + int(np.argmin(finite))
                clip = int(np.searchsorted(self.offsets, first, side="right") - 1)
                return [f"{self.path / FRAMES}: clip {self.names[clip]!s} holds NaN or inf coordinates"]
        return []

    def verify(self) -> list[str]:
        """Recompute every array's checksum; an empty list means the dataset is intact."""
        problems = []
        archives: dict[str, dict[str, np.ndarray]] = {}
        for key, spec in self.manifest["arrays"].items():
            file = self.path / spec["file"]
            try:
                if file.suffix == ".npz":
                    if spec["file"] not in archives:
                        archives[spec["file"]] = _load_npz(file)
                    digest = _sha256(archives[spec["file"]][key])
                else:
                    digest = _sha256_file(file)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                problems.append(f"{file}: cannot read array '{key}' ({exc})")
                continue
            if digest != spec["sha256"]:
                problems.append(f"{file}: array '{key}' does not match its checksum (corrupted or modified)")
        return problems


def open_dataset(path: str | Path) -> PreparedDataset:
    """Open a prepared dataset, checking the manifest and every array's size but not the checksums."""
    path = Path(path)
    manifest_file = path / MANIFEST
    require_directory(path, "prepared dataset directory")
    if not manifest_file.is_file():
        raise UserError(f"{path}: not a prepared dataset (no {MANIFEST}); make one with `cascade prepare ...`")
    try:
        manifest = yaml.safe_load(manifest_file.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{manifest_file}: cannot be read ({str(exc).splitlines()[0]})") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise UserError(f"{manifest_file}: format_version {version!r} is not supported (expected {FORMAT_VERSION})")

    clips_file = path / CLIPS
    try:
        clips = _load_npz(clips_file)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(f"{clips_file}: cannot be read ({exc})") from None
    try:
        arrays = manifest["arrays"]
        expected = {"frames", *CLIP_FIELDS, "name", *manifest.get("extra_fields", []),
                    *(f"split.{p}" for p in manifest["protocols"])}
        if missing := sorted(expected - set(arrays)):
            raise KeyError(f"arrays.{missing[0]}")
        frames_shape = [manifest["counts"]["frames"], manifest["persons"], len(manifest["layout"]["joint_names"]),
                        manifest["layout"]["coords"]]
        if arrays["frames"]["shape"] != frames_shape:
            raise ValueError(f"arrays.frames.shape {arrays['frames']['shape']} should be {frames_shape}")
        dataset = PreparedDataset(path, manifest, clips)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{manifest_file}: malformed manifest ({exc})") from None

    num_clips = manifest["counts"]["clips"]
    for key, spec in arrays.items():
        if spec["file"] != CLIPS:
            continue
        if key not in clips:
            raise UserError(f"{clips_file}: array '{key}' listed in {MANIFEST} is missing")
        found = (clips[key].dtype.str, list(clips[key].shape))
        if found != (spec["dtype"], spec["shape"]) or found[1] != [num_clips]:
            raise UserError(f"{clips_file}: array '{key}' is {found[0]} {found[1]}, "
                            f"{MANIFEST} says {spec['dtype']} {spec['shape']} for {num_clips} clips")
    for key in ("frames", "confidence"):
        if key not in arrays:
            continue
        raw_file = path / arrays[key]["file"]
        expected_bytes = 4 * int(np.prod(arrays[key]["shape"]))
        actual_bytes = raw_file.stat().st_size if raw_file.is_file() else None
        if actual_bytes != expected_bytes:
            found = "missing" if actual_bytes is None else f"{actual_bytes} bytes"
            raise UserError(f"{raw_file}: {found}, expected {expected_bytes} bytes "
                            f"(float32 {arrays[key]['shape']}); re-create the dataset")
    return dataset
