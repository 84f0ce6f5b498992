"""The shared prepare runner, driven by a toy text format: 'LABEL T' per file, or junk."""

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import cascade_cli.data.prepare as runner
from cascade_cli.data.format import open_dataset
from cascade_cli.data.prepare import PrepareSpec, RawClip, Rejected, prepare, summary_lines
from cascade_cli.errors import UserError
from cascade_cli.layouts import NTU25


def parse_toy(source: str, persons: int = 1) -> RawClip:
    text = Path(source).read_text()
    if text.startswith("crash"):
        raise IndexError("list index out of range")
    try:
        label, length = (int(v) for v in text.split())
    except ValueError:
        raise Rejected(f"expected 'LABEL T', got {text.strip()!r}") from None
    seed = int(Path(source).stem.split("_")[1])
    frames = np.random.default_rng(seed).normal(size=(length, persons, 25, 3)).astype(np.float32)
    return RawClip(frames, label, Path(source).stem, subject=seed % 4, warnings=["short"] if length < 3 else [])


def parse_slowly(source: str) -> RawClip:
    """parse_toy at a pace a test can interrupt (0.2 s a file)."""
    import time

    time.sleep(0.2)
    return parse_toy(source)


def by_subject(meta):
    return {"xsub": ("even subjects train", np.where(meta["subject"] % 2 == 0, 0, 1))}


SPEC = PrepareSpec(name="toy", layout=NTU25, persons=2, class_names=["a", "b", "c"], protocols=by_subject)


@pytest.fixture
def raw(tmp_path) -> list[str]:
    folder = tmp_path / "raw"
    folder.mkdir()
    contents = {i: f"{i % 3} {2 + i % 7}" for i in range(40)}
    contents[5], contents[17], contents[30] = "oops", "crash", "7 10"  # junk, parser bug, bad label
    for i, text in contents.items():
        (folder / f"clip_{i:03d}.txt").write_text(text)
    return sorted(str(p) for p in folder.iterdir())


def manifest(path: Path) -> dict:
    return yaml.safe_load((path / "dataset.yaml").read_text())


def test_bad_files_are_reported_and_skipped(raw, tmp_path):
    report = prepare(SPEC, raw, parse_toy, tmp_path / "ds", raw_dir="raw", workers=1, chunk_size=8,
                     skipped=[("clip_999.txt", "on the missing list")])
    assert report["prepared"] == 37 and report["sources"] == 41
    reasons = {Path(r["file"]).name: r["reason"] for r in report["rejected"]}
    assert reasons == {"clip_005.txt": "expected 'LABEL T', got 'oops'",
                       "clip_017.txt": "unexpected IndexError: list index out of range",
                       "clip_030.txt": "label 7 outside 0..2"}
    assert report["skipped"] == [{"file": "clip_999.txt", "reason": "on the missing list"}]
    assert {Path(w["file"]).name for w in report["warnings"]} == {f"clip_{i:03d}.txt" for i in (0, 7, 14, 21, 28, 35)}
    ds = open_dataset(tmp_path / "ds")
    assert ds.num_clips == 37 and "clip_005" not in set(ds.names)
    assert json.loads((tmp_path / "ds" / "prepare_report.json").read_text()) == report
    # Clips keep their values and their order; the protocol came from the metadata.
    first = ds.clip(0)
    assert first.shape == (2, 2, 25, 3) and np.array_equal(first[:, 0], parse_toy(raw[0]).frames[:, 0])
    assert not first[:, 1].any()
    assert report["protocols"]["xsub"]["train"] == int((ds.meta("subject") % 2 == 0).sum())
    assert not (tmp_path / "ds.partial").exists()
    assert any("rejected" in line and "clip_005" in line for line in summary_lines(report))


def test_strict_stops_without_a_dataset(raw, tmp_path):
    with pytest.raises(UserError, match="clip_005.txt: expected 'LABEL T'"):
        prepare(SPEC, raw, parse_toy, tmp_path / "ds", raw_dir="raw", workers=1, chunk_size=8, strict=True)
    assert not (tmp_path / "ds").exists()


def test_interrupted_prepare_resumes_to_the_same_dataset(raw, tmp_path, monkeypatch):
    prepare(SPEC, raw, parse_toy, tmp_path / "straight", raw_dir="raw", workers=1, chunk_size=8)

    real, calls = runner._run_chunk, []

    def dies_after_two_chunks(spec, parse, index, sources, work_dir):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(index)
        return real(spec, parse, index, sources, work_dir)

    monkeypatch.setattr(runner, "_run_chunk", dies_after_two_chunks)
    with pytest.raises(KeyboardInterrupt):
        prepare(SPEC, raw, parse_toy, tmp_path / "resumed", raw_dir="raw", workers=1, chunk_size=8)
    assert not (tmp_path / "resumed").exists()
    assert len(list((tmp_path / "resumed.partial").glob("chunk-*.npz"))) == 2

    calls.clear()
    monkeypatch.setattr(runner, "_run_chunk", lambda *a: (calls.append(a[2]), real(*a))[1])
    prepare(SPEC, raw, parse_toy, tmp_path / "resumed", raw_dir="raw", workers=1, chunk_size=8)
    assert calls == [2, 3, 4]  # the two finished chunks were not parsed again
    assert manifest(tmp_path / "resumed")["arrays"] == manifest(tmp_path / "straight")["arrays"]
    assert (tmp_path / "resumed" / "prepare_report.json").read_text() == \
        (tmp_path / "straight" / "prepare_report.json").read_text()


def test_process_pool_gives_the_same_dataset(raw, tmp_path):
    prepare(SPEC, raw, parse_toy, tmp_path / "one", raw_dir="raw", workers=1, chunk_size=8)
    prepare(SPEC, raw, functools.partial(parse_toy, persons=1), tmp_path / "two", raw_dir="raw", workers=2,
            chunk_size=8)
    assert manifest(tmp_path / "two")["arrays"] == manifest(tmp_path / "one")["arrays"]


def test_existing_output_and_empty_input_are_user_errors(raw, tmp_path):
    prepare(SPEC, raw[:3], parse_toy, tmp_path / "ds", raw_dir="raw", workers=1)
    with pytest.raises(UserError, match="already exists"):
        prepare(SPEC, raw[:3], parse_toy, tmp_path / "ds", raw_dir="raw", workers=1)
    with pytest.raises(UserError, match="no input files"):
        prepare(SPEC, [], parse_toy, tmp_path / "empty", raw_dir="raw", workers=1)
    with pytest.raises(UserError, match="no clip could be prepared .*clip_005.txt"):
        prepare(SPEC, [raw[5]], parse_toy, tmp_path / "junk", raw_dir="raw", workers=1)
    assert not (tmp_path / "junk").exists()
