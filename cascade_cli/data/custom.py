"""Users' own skeletons in any registered layout, labelled by a CSV file.

Clips come either as one file per clip in a folder,

    <name>.npy    the array (T, [M,] J, C)
    <name>.npz    array `data` (T, [M,] J, C), optional `confidence` (T, [M,] J)
    <name>.json   the nested list [T][[M]][J][C], or an object {"data": ..., "confidence": ...}

or as one .npz holding `data` (N, T_max, [M,] J, C), `lengths` (N,) and optional `confidence`
(N, T_max, [M,] J), whose clips are named by their index. C is the layout's coordinate count, or one
more when the last channel is a per-joint confidence. labels.csv has a header with the columns `clip`
(file stem or index) and `label` (class name or integer), and optionally `split` (train/test),
`subject` and `camera`.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cascade_cli.data.format import SPLIT_CODES
from cascade_cli.data.prepare import PrepareSpec, RawClip, Rejected, prepare
from cascade_cli.data.readers import as_float, load_json, source_files
from cascade_cli.errors import UserError
from cascade_cli.layouts import Layout, get_layout

SUFFIXES = (".npy", ".npz", ".json")
COLUMNS = ("clip", "label", "split", "subject", "camera")
NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)  # what np.load raises for a bad file


@dataclass(frozen=True)
class Labels:
    rows: dict[str, tuple[int, int, int, int]]  # clip -> (label index, subject, camera, split code)
    lines: dict[str, int]  # clip -> its line in the CSV, for messages
    class_names: list[str]
    has_split: bool


def _int_cell(value: str, where: str) -> int:
    try:
        return int(value) if value else -1
    except ValueError:
        raise UserError(f"{where}: '{value}' is not an integer") from None


@functools.lru_cache(maxsize=4)
def read_labels(path: str, digest: str, packed: bool) -> Labels:
    """Class names are the sorted label names, or "0".."K-1" when every label is an integer (kept as
    given). `digest` (the file's sha256) keys the cache and enters the parser's arguments, which the
    batch runner fingerprints: an edited labels.csv is reread and its run is not resumed."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot be read ({exc})") from None
    reader = csv.reader(io.StringIO(text))
    header = [column.strip().lower() for column in next(reader, [])]
    if not {"clip", "label"} <= set(header) or set(header) - set(COLUMNS) or len(set(header)) != len(header):
        raise UserError(f"{path}: the header must name the columns clip and label, optionally split, subject and "
                        f"camera, each once (found: {', '.join(header) or 'nothing'})")
    entries, lines = [], {}  # entries: (clip, label name, subject, camera, split code)
    for line, cells in enumerate(reader, start=2):
        if not any(cell.strip() for cell in cells):
            continue
        where = f"{path} line {line}"
        if len(cells) != len(header):
            raise UserError(f"{where}: {len(cells)} fields, the header has {len(header)}")
        row = {column: cell.strip() for column, cell in zip(header, cells)}
        clip = str(int(row["clip"])) if packed and row["clip"].isdigit() else row["clip"]
        if not clip or not row["label"]:
            raise UserError(f"{where}: empty clip or label")
        if clip in lines:
            raise UserError(f"{where}: clip '{clip}' is already listed on line {lines[clip]}")
        split = row.get("split", "train").lower()
        if split not in SPLIT_CODES:
            raise UserError(f"{where}: split '{row['split']}' is not train or test")
        lines[clip] = line
        entries.append((clip, row["label"], _int_cell(row.get("subject", ""), where),
                        _int_cell(row.get("camera", ""), where), SPLIT_CODES[split]))
    if not entries:
        raise UserError(f"{path}: no label rows")
    names = [name for _, name, *_ in entries]
    if all(name.isdigit() for name in names):
        class_names, label_of = [str(i) for i in range(max(map(int, names)) + 1)], int
    else:
        class_names = sorted(set(names))
        label_of = {name: i for i, name in enumerate(class_names)}.__getitem__
    rows = {clip: (label_of(name), subject, camera, split) for clip, name, subject, camera, split in entries}
    return Labels(rows, lines, class_names, "split" in header)


@functools.lru_cache(maxsize=1)
def _load_packed(path: str) -> dict[str, np.ndarray]:
    """The single-file form, loaded once per process: np.load reads an .npz member whole, so reading
    clip by clip would reload the whole array for every clip."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except NPZ_ERRORS as exc:
        raise UserError(f"{path}: cannot be read as .npz ({exc})") from None
    if "data" not in arrays or "lengths" not in arrays:
        raise UserError(f"{path}: needs the arrays data and lengths (found: {', '.join(arrays) or 'none'})")
    data = arrays["data"]
    if data.ndim not in (4, 5) or arrays["lengths"].shape != data.shape[:1] \
            or ("confidence" in arrays and arrays["confidence"].shape[:2] != data.shape[:2]):
        raise UserError(f"{path}: expected data (N, T_max, [M,] J, C), lengths (N,) and optional confidence "
                        f"(N, T_max, [M,] J); got data {data.shape}, lengths {arrays['lengths'].shape}")
    return arrays


def _load_clip(source: str, packed: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """A clip's raw arrays, unchecked: data (T, [M,] J, C) and confidence (T, [M,] J) or None."""
    if packed:
        path, _, index = source.rpartition("#")
        arrays, i = _load_packed(path), int(index)
        T = int(arrays["lengths"][i])
        if not 1 <= T <= arrays["data"].shape[1]:
            raise Rejected(f"length {T} outside 1..{arrays['data'].shape[1]}")
        confidence = arrays.get("confidence")
        return arrays["data"][i, :T], None if confidence is None else confidence[i, :T]
    suffix = Path(source).suffix
    if suffix == ".json":
        data = load_json(source)
        if isinstance(data, dict):
            if "data" not in data:
                raise Rejected("a JSON object needs the key data")
            return as_float(data["data"], "data"), None if data.get("confidence") is None \
                else as_float(data["confidence"], "confidence")
        return as_float(data, "data"), None
    try:
        if suffix == ".npy":
            return np.load(source, mmap_mode="r", allow_pickle=False), None
        with np.load(source, allow_pickle=False) as archive:
            if "data" not in archive.files:
                raise Rejected(f"no array 'data' (found: {', '.join(archive.files) or 'none'})")
            return archive["data"], archive["confidence"] if "confidence" in archive.files else None
    except NPZ_ERRORS as exc:
        raise Rejected(f"unreadable {suffix} file ({exc})") from None


def _shaped(data: np.ndarray, confidence: np.ndarray | None,
            layout: Layout) -> tuple[np.ndarray, np.ndarray | None]:  # (T, M, J, C), (T, M, J) or None
    """Checks the shape against the layout and splits off a confidence channel; no copies, so probing a
    memory-mapped .npy stays cheap."""
    J, C = layout.num_joints, layout.coords
    expected = f"expected (T, [M,] {J}, {C}), or (T, [M,] {J}, {C + 1}) with a confidence channel"
    if data.ndim == 3:
        data, confidence = data[:, None], None if confidence is None else confidence[:, None]
    if data.ndim != 4 or data.shape[0] < 1:
        raise Rejected(f"array of shape {data.shape}; {expected}")
    if data.shape[2] != J:
        raise Rejected(f"{data.shape[2]} joints, layout {layout.name} has {J}: shape {data.shape}; {expected}")
    if data.shape[3] not in (C, C + 1):
        raise Rejected(f"{data.shape[3]} values per joint, layout {layout.name} in {C}-D: "
                       f"shape {data.shape}; {expected}")
    if data.shape[3] == C + 1:
        if confidence is not None:
            raise Rejected("both a confidence channel and a confidence array")
        return data[..., :C], data[..., C]
    if confidence is not None and confidence.shape != data.shape[:3]:
        raise Rejected(f"confidence of shape {confidence.shape}, expected {data.shape[:3]} to match the data")
    return data, confidence


def _clip_name(source: str, packed: bool) -> str:
    return source.rpartition("#")[2] if packed else Path(source).stem


def parse_custom_clip(source: str, *, labels_csv: str, labels_sha: str, packed: bool, layout: Layout,
                      confidence: bool) -> RawClip:
    """confidence: whether the dataset has one, as decided by its first clip."""
    labels = read_labels(labels_csv, labels_sha, packed)
    name = _clip_name(source, packed)
    if name not in labels.rows:
        raise Rejected(f"no row for clip '{name}' in {labels_csv}")
    data, conf = _shaped(*_load_clip(source, packed), layout)
    if (conf is not None) != confidence:
        raise Rejected("no confidence, but the dataset's first clip has one" if confidence
                       else "a confidence, but the dataset's first clip has none")
    label, subject, camera, split = labels.rows[name]
    return RawClip(frames=as_float(data, "data").astype(np.float32), label=label, name=name, subject=subject,
                   camera=camera, confidence=None if conf is None else as_float(conf, "confidence").astype(np.float32),
                   extra={"split": split} if labels.has_split else {})


def _custom_protocols(meta: dict[str, np.ndarray]) -> dict[str, tuple[str, np.ndarray]]:
    if "split" in meta:
        return {"split": ("train/test as given by the split column of labels.csv", meta["split"])}
    return {"all": ("every clip is training data (labels.csv has no split column)",
                    np.zeros(len(meta["label"]), np.int8))}


def prepare_custom(clips_dir: str | Path, labels_csv: str | Path, out_dir: str | Path, *, layout: str,
                   name: str = "custom", coords: int | None = None, workers: int | None = None, strict: bool = False,
                   overwrite: bool = False, reporter=None) -> dict:
    """clips_dir: a folder of clip files, or the single .npz. coords: 2 or 3 to use the layout's joints
    with another coordinate count (default: the layout's own)."""
    skeleton = get_layout(layout)
    if coords is not None:
        if coords not in (2, 3):
            raise UserError(f"coords must be 2 or 3, got {coords}")
        skeleton = skeleton.with_coords(coords)
    clips_dir, labels_csv = Path(clips_dir), Path(labels_csv)
    packed = clips_dir.is_file()
    _load_packed.cache_clear()  # a file rewritten at the same path must be read again
    if packed:
        if clips_dir.suffix != ".npz":
            raise UserError(f"{clips_dir}: expected a folder of clip files or a single .npz")
        sources = [f"{clips_dir}#{i}" for i in range(len(_load_packed(str(clips_dir))["lengths"]))]
    else:
        sources = source_files(clips_dir, SUFFIXES)
        stems = {}
        for source in sources:
            if (other := stems.setdefault(Path(source).stem, source)) != source:
                raise UserError(f"{other} and {source} would both be clip '{Path(source).stem}'; keep one")
    try:
        labels_sha = hashlib.sha256(labels_csv.read_bytes()).hexdigest()
    except OSError as exc:
        raise UserError(f"{labels_csv}: cannot be read ({exc})") from None
    labels = read_labels(str(labels_csv), labels_sha, packed)

    # A first pass over the clips' shapes: the writer needs the largest person count up front, and
    # whether the dataset has a confidence is decided by its first (labelled, well-shaped) clip.
    persons, has_confidence = 1, None
    for source in sources:
        if _clip_name(source, packed) not in labels.rows:
            continue
        try:
            data, conf = _shaped(*_load_clip(source, packed), skeleton)
        except Rejected:
            continue  # parsing rejects it again, with the reason
        persons = max(persons, data.shape[1])
        if has_confidence is None:
            has_confidence = conf is not None

    spec = PrepareSpec(name=name, layout=skeleton, persons=persons, class_names=labels.class_names,
                       protocols=_custom_protocols, confidence=bool(has_confidence),
                       extra_fields={"split": np.int8} if labels.has_split else {})
    parse = functools.partial(parse_custom_clip, labels_csv=str(labels_csv), labels_sha=labels_sha, packed=packed,
                              layout=skeleton, confidence=bool(has_confidence))
    found = {_clip_name(source, packed) for source in sources}
    orphans = [(str(labels_csv), f"line {labels.lines[clip]}: no clip file for '{clip}'")
               for clip in labels.rows if clip not in found]
    report = prepare(spec, sources, parse, out_dir, raw_dir=str(clips_dir), workers=workers, strict=strict,
                     overwrite=overwrite, reporter=reporter, warnings=orphans)
    _load_packed.cache_clear()  # free the single-file arrays
    return report
