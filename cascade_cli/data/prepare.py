"""Turning a folder of raw files into a prepared dataset: parallel, resumable, and honest about bad files.

Every converter (NTU, Penn Action, N-UCLA, custom) reduces to a `parse(source) -> RawClip` function;
this module does the rest once:

* sources are cut into fixed chunks, parsed in a process pool, and each finished chunk is saved as a
  shard in `<out_dir>.partial/`. A killed run restarts and skips finished chunks; since chunks are
  fixed and assembled in order, the result is identical to an uninterrupted run.
* memory stays bounded by one chunk per worker plus one shard during assembly, whatever the size of
  the dataset.
* a file that cannot become a clip is rejected with its reason (never silently dropped, never half
  written) and listed in `prepare_report.json`; `strict=True` turns any rejection into an error.
* the dataset itself is published atomically by DatasetWriter.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cascade_cli.data.format import DatasetWriter
from cascade_cli.data.registry import KnownDataset
from cascade_cli.errors import UserError
from cascade_cli.layouts import Layout
from cascade_cli.locking import LOCK_FILE, directory_lock
from cascade_cli.progress import Reporter

REPORT = "prepare_report.json"
PR_SET_PDEATHSIG = 1  # prctl(2) option: the signal this process gets when its parent dies
META_FIELDS = ("label", "subject", "camera", "setup")


class Rejected(Exception):
    """Raised by a parser for a raw file that cannot become a clip; the message is the reported reason."""


@dataclass
class RawClip:
    frames: np.ndarray  # (T, M, J, C) float32, M <= spec.persons
    label: int  # 0-based
    name: str
    subject: int = -1
    camera: int = -1
    setup: int = -1
    confidence: np.ndarray | None = None  # (T, M, J), exactly when spec.confidence
    extra: dict = field(default_factory=dict)  # values of spec.extra_fields
    warnings: list[str] = field(default_factory=list)  # problems that did not stop the clip


# Per-clip metadata of the accepted clips (name, label, subject, camera, setup, extras), in order
# -> {protocol: (description, membership)}, membership 0 train / 1 test / -1 unused per clip.
Protocols = Callable[[dict[str, np.ndarray]], dict[str, tuple[str, np.ndarray]]]


@dataclass
class PrepareSpec:
    name: str
    layout: Layout
    persons: int
    class_names: list[str]
    protocols: Protocols
    confidence: bool = False
    extra_fields: dict[str, type] = field(default_factory=dict)

    @classmethod
    def for_dataset(cls, dataset: KnownDataset, protocols: Protocols, *, layout: Layout | None = None,
                    extra_fields: dict[str, type] | None = None) -> PrepareSpec:
        """The spec of a registered dataset: name, persons, classes and confidence from the registry;
        `layout` when the converter writes another joint order than the registry's default."""
        return cls(name=dataset.name, layout=layout or dataset.layout, persons=dataset.persons,
                   class_names=list(dataset.class_names), protocols=protocols, confidence=dataset.confidence,
                   extra_fields=extra_fields or {})


# ----------------------------------------------------------------------------------------------
# One chunk, in a worker process


def _check_clip(clip: RawClip, spec: PrepareSpec) -> None:
    J, C = spec.layout.num_joints, spec.layout.coords
    shape = np.shape(clip.frames)
    if len(shape) != 4 or shape[0] < 1 or not 1 <= shape[1] <= spec.persons or shape[2:] != (J, C):
        raise Rejected(f"frames of shape {shape}, expected (T >= 1, 1..{spec.persons}, {J}, {C})")
    if not np.isfinite(clip.frames).all():
        raise Rejected("non-finite coordinates (NaN or inf)")
    if not 0 <= clip.label < len(spec.class_names):
        raise Rejected(f"label {clip.label} outside 0..{len(spec.class_names) - 1}")
    if spec.confidence and (clip.confidence is None or np.shape(clip.confidence) != shape[:3]
                            or not np.isfinite(clip.confidence).all()):
        raise Rejected(f"confidence missing, non-finite or not of shape {shape[:3]}")
    if set(clip.extra) != set(spec.extra_fields):
        raise Rejected(f"clip fields {sorted(clip.extra)} differ from {sorted(spec.extra_fields)}")


def _pad_persons(array: np.ndarray, persons: int) -> np.ndarray:
    padded = np.zeros((array.shape[0], persons, *array.shape[2:]), np.float32)
    padded[:, :array.shape[1]] = array
    return padded


def _run_chunk(spec: PrepareSpec, parse: Callable[[str], RawClip], index: int, sources: Sequence[str],
               work_dir: Path) -> tuple[int, int]:
    """Parse one chunk and save it as a shard; returns (chunk index, number of rejected files)."""
    clips, rejected, warnings = [], [], []
    for source in sources:
        try:
            clip = parse(source)
            _check_clip(clip, spec)
        except Rejected as exc:
            rejected.append({"file": source, "reason": str(exc)})
            continue
        except Exception as exc:  # a parser bug or an input nobody foresaw: report it, keep going
            rejected.append({"file": source, "reason": f"unexpected {type(exc).__name__}: {exc}"})
            continue
        clips.append(clip)
        warnings += [{"file": source, "message": message} for message in clip.warnings]

    shard: dict[str, np.ndarray] = {
        "length": np.array([len(c.frames) for c in clips], np.int64),
        "persons": np.array([c.frames.shape[1] for c in clips], np.int64),
        "name": np.array([c.name for c in clips], dtype=str),
        **{key: np.array([getattr(c, key) for c in clips], np.int64) for key in META_FIELDS},
        **{f"extra.{key}": np.array([c.extra[key] for c in clips], dtype) for key, dtype in spec.extra_fields.items()},
    }
    J, C = spec.layout.num_joints, spec.layout.coords
    shard["frames"] = (np.concatenate([_pad_persons(np.asarray(c.frames, np.float32), spec.persons) for c in clips])
                       if clips else np.zeros((0, spec.persons, J, C), np.float32))
    if spec.confidence:
        shard["confidence"] = (np.concatenate([_pad_persons(np.asarray(c.confidence, np.float32), spec.persons)
                                               for c in clips]) if clips else np.zeros((0, spec.persons, J), np.float32))
    shard["log"] = np.array(json.dumps({"rejected": rejected, "warnings": warnings}))
    tmp = work_dir / f".chunk-{index:06d}.tmp.npz"
    np.savez(tmp, **shard)
    os.replace(tmp, _shard_path(work_dir, index))  # the shard's existence marks the chunk as done
    return index, len(rejected)


def _shard_path(work_dir: Path, index: int) -> Path:
    return work_dir / f"chunk-{index:06d}.npz"


# ----------------------------------------------------------------------------------------------
# The whole job


def _open_work_dir(work_dir: Path, fingerprint: str, reporter: Reporter) -> None:
    """Reuse finished chunks only if they came from the very same job (same sources and settings).
    The caller holds the work directory's lock, which must survive a start-over."""
    job_file = work_dir / "job.json"
    if job_file.exists():
        try:
            same = json.loads(job_file.read_text())["fingerprint"] == fingerprint
        except (OSError, ValueError, KeyError):
            same = False
        if same:
            done = len(list(work_dir.glob("chunk-*.npz")))
            if done:
                reporter.info(f"resuming: {done} finished chunk(s) found in {work_dir}")
            return
        reporter.warn(f"{work_dir} holds an unfinished job with other inputs or settings; starting over")
    for entry in work_dir.iterdir():
        if entry.name != LOCK_FILE:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    job_file.write_text(json.dumps({"fingerprint": fingerprint}))


def _default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _chunk_log(work_dir: Path, index: int) -> dict:
    with np.load(_shard_path(work_dir, index), allow_pickle=False) as shard:
        return json.loads(str(shard["log"]))


def _end_with_parent(parent: int) -> None:
    """Pool initializer: have the kernel kill this worker when the process that started it dies, so a
    killed prepare leaves no worker behind (Linux; elsewhere workers end when their queue closes)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(1)


def _process_chunks(spec: PrepareSpec, parse: Callable[[str], RawClip], chunks: list[Sequence[str]],
                    pending: list[int], work_dir: Path, workers: int, strict: bool, reporter: Reporter) -> None:
    def check(index: int, n_rejected: int) -> None:
        if strict and n_rejected:
            first = _chunk_log(work_dir, index)["rejected"][0]
            _shard_path(work_dir, index).unlink()  # parsed again once the file is fixed
            raise UserError(f"{first['file']}: {first['reason']} (--strict stops at the first rejected file)")

    with reporter.track(f"preparing {spec.name}", sum(len(chunks[i]) for i in pending)) as advance:
        if workers <= 1:
            for index in pending:
                check(*_run_chunk(spec, parse, index, chunks[index], work_dir))
                advance(len(chunks[index]))
            return
        # spawn rather than fork: the parent may hold torch's thread pools, which fork can deadlock;
        # and rather than forkserver, whose server process outlives a killed parent and keeps its
        # workers alive. Spawned workers are the parent's own children and end with it.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_end_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            running = {pool.submit(_run_chunk, spec, parse, i, chunks[i], work_dir) for i in pending[:2 * workers]}
            queued = iter(pending[2 * workers:])  # a bounded queue keeps memory flat for huge datasets
            try:
                while running:
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        index, n_rejected = future.result()
                        check(index, n_rejected)
                        advance(len(chunks[index]))
                        if (nxt := next(queued, None)) is not None:
                            running.add(pool.submit(_run_chunk, spec, parse, nxt, chunks[nxt], work_dir))
            except BaseException:
                for future in running:
                    future.cancel()
                raise


def prepare(spec: PrepareSpec, sources: Sequence[str], parse: Callable[[str], RawClip], out_dir: str | Path, *,
            raw_dir: str, workers: int | None = None, strict: bool = False, overwrite: bool = False,
            skipped: Sequence[tuple[str, str]] = (), warnings: Sequence[tuple[str, str]] = (),
            reporter: Reporter | None = None, finalize: Callable[[Path], None] | None = None,
            chunk_size: int = 64) -> dict:
    """Parse `sources` into the prepared dataset `out_dir`; return the report (also saved as
    prepare_report.json inside the dataset). `parse` runs in worker processes, so it must be a
    module-level function or a functools.partial of one. `skipped` and `warnings` are (file, text)
    pairs the caller found before parsing (e.g. the NTU missing list, orphan label rows)."""
    reporter = reporter or Reporter(quiet=True)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise UserError(f"{out_dir} already exists; choose another output directory or pass --overwrite")
    if not sources:
        raise UserError(f"{raw_dir}: no input files found")
    work_dir = out_dir.with_name(out_dir.name + ".partial")
    fingerprint = hashlib.sha256(json.dumps([spec.name, spec.layout.to_dict(), spec.persons, spec.class_names,
                                             getattr(parse, "__qualname__", repr(parse)), repr(getattr(parse, "keywords", "")),
                                             chunk_size, list(map(str, sources))]).encode()).hexdigest()
    with directory_lock(work_dir, "dataset being prepared"):
        if out_dir.exists() and not overwrite:  # finished by another process meanwhile
            raise UserError(f"{out_dir} already exists; choose another output directory or pass --overwrite")
        _open_work_dir(work_dir, fingerprint, reporter)
        try:
            report = _prepare_locked(spec, sources, parse, out_dir, work_dir, raw_dir, workers, strict, overwrite,
                                     skipped, warnings, reporter, chunk_size)
        except UserError:
            if strict:  # --strict fails with nothing left behind: no dataset, no half-done work
                shutil.rmtree(work_dir)
            raise
        shutil.rmtree(work_dir)
    if finalize is not None:
        finalize(out_dir)
    return report


def _prepare_locked(spec: PrepareSpec, sources: Sequence[str], parse: Callable[[str], RawClip], out_dir: Path,
                    work_dir: Path, raw_dir: str, workers: int | None, strict: bool, overwrite: bool,
                    skipped: Sequence[tuple[str, str]], warnings: Sequence[tuple[str, str]], reporter: Reporter,
                    chunk_size: int) -> dict:
    chunks = [sources[i:i + chunk_size] for i in range(0, len(sources), chunk_size)]
    pending = [i for i in range(len(chunks)) if not _shard_path(work_dir, i).exists()]
    workers = max(1, min(workers or _default_workers(), len(pending) or 1))
    _process_chunks(spec, parse, chunks, pending, work_dir, workers, strict, reporter)

    report = {"dataset": spec.name, "raw_dir": str(raw_dir), "sources": len(sources) + len(skipped),
              "prepared": 0, "skipped": [{"file": f, "reason": r} for f, r in skipped],
              "rejected": [], "warnings": [{"file": f, "message": m} for f, m in warnings], "protocols": {}}
    meta: dict[str, list] = {key: [] for key in ("name", *META_FIELDS, *spec.extra_fields)}
    with DatasetWriter(out_dir, spec.name, spec.layout, spec.persons, spec.class_names, overwrite=overwrite,
                       confidence=spec.confidence, extra_fields=spec.extra_fields) as writer:
        for index in range(len(chunks)):
            with np.load(_shard_path(work_dir, index), allow_pickle=False) as shard:
                _add_shard(writer, dict(shard), spec, meta, report)
        if report["prepared"] == 0:
            first = report["rejected"][0] if report["rejected"] else {"file": raw_dir, "reason": "no clips"}
            raise UserError(f"no clip could be prepared from {raw_dir} (e.g. {first['file']}: {first['reason']})")
        arrays = {key: np.asarray(values) for key, values in meta.items()}
        for protocol, (description, membership) in spec.protocols(arrays).items():
            membership = np.asarray(membership, np.int8)
            writer.set_protocol(protocol, description, membership)
            report["protocols"][protocol] = {"description": description,
                                             "train": int((membership == 0).sum()),
                                             "test": int((membership == 1).sum())}
        writer.add_file(REPORT, json.dumps(report, indent=2) + "\n")
    return report


def _add_shard(writer: DatasetWriter, shard: dict[str, np.ndarray], spec: PrepareSpec, meta: dict,
               report: dict) -> None:
    log = json.loads(str(shard["log"]))
    report["rejected"] += log["rejected"]
    report["warnings"] += log["warnings"]
    ends = np.cumsum(shard["length"])
    for i, (start, end) in enumerate(zip(ends - shard["length"], ends)):
        persons = int(shard["persons"][i])
        extra = {key: shard[f"extra.{key}"][i].item() for key in spec.extra_fields}
        confidence = shard["confidence"][start:end, :persons] if spec.confidence else None
        writer.add_clip(shard["frames"][start:end, :persons], int(shard["label"][i]), str(shard["name"][i]),
                        *(int(shard[key][i]) for key in META_FIELDS[1:]), confidence=confidence, extra=extra)
        for key in meta:
            meta[key].append(extra[key] if key in extra else shard[key][i].item())
    report["prepared"] += len(shard["length"])


def summary_lines(report: dict, limit: int = 5) -> list[str]:
    """What a person wants to know at the end of a prepare: how many, and what went wrong where."""
    lines = [f"prepared {report['prepared']} of {report['sources']} files; skipped {len(report['skipped'])}; "
             f"rejected {len(report['rejected'])}; warnings {len(report['warnings'])}"]
    if report["skipped"]:
        reasons = sorted({s["reason"] for s in report["skipped"]})
        lines.append(f"  skipped: {'; '.join(reasons)}")
    for entry in report["rejected"][:limit]:
        lines.append(f"  rejected {entry['file']}: {entry['reason']}")
    if len(report["rejected"]) > limit:
        lines.append(f"  ... and {len(report['rejected']) - limit} more rejected (see {REPORT})")
    for entry in report["warnings"][:limit]:
        lines.append(f"  warning {entry['file']}: {entry['message']}")
    if len(report["warnings"]) > limit:
        lines.append(f"  ... and {len(report['warnings']) - limit} more warnings (see {REPORT})")
    for protocol, counts in report["protocols"].items():
        lines.append(f"  protocol {protocol}: {counts['train']} train / {counts['test']} test")
    return lines
