"""NTU RGB+D: golden tests against the CTR-GCN outputs of real files, plus synthetic files for the branches
the 9 real samples never take (noise bodies, 0-body frames, slot rule) and for broken inputs."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import yaml

from cascade_cli.data import ntu
from cascade_cli.data import prepare as runner
from cascade_cli.data.format import open_dataset
from cascade_cli.data.ntu import (MISSING_REASON, denoise, missing_samples, ntu_protocols, parse_ntu_file,
                                  parse_skeleton, prepare_ntu, read_sample_names, translate)
from cascade_cli.errors import UserError
from tests.conftest import shared_dataset


@pytest.fixture(scope="module")
def samples() -> Path:
    return shared_dataset("ntu_skeleton_samples")


def link_samples(samples: Path, raw: Path) -> Path:
    raw.mkdir()
    for file in samples.glob("*.skeleton"):
        (raw / file.name).symlink_to(file)
    return raw


# ----------------------------------------------------------------------------------------------
# Golden: real files vs CTR-GCN


def test_parse_matches_ctr_step1(samples):
    reference = np.load(samples / "reference" / "ctrgcn_get_raw_skes_data_output.npz")
    for sample in json.loads((samples / "reference" / "ctrgcn_get_raw_skes_data_output.json").read_text()):
        raw = parse_skeleton(samples / f"{sample['name']}.skeleton")
        assert raw.num_frames == sample["num_frames"] and raw.dropped_frames == []
        assert list(raw.bodies) == [body["bodyID"] for body in sample["bodies"]]
        for expected in sample["bodies"]:
            body, key = raw.bodies[expected["bodyID"]], f"{sample['name']}/{expected['bodyID']}"
            assert body.joints.dtype == body.colors.dtype == np.float32
            assert np.array_equal(body.joints, reference[f"{key}/joints"])
            assert np.array_equal(body.colors, reference[f"{key}/colors"])
            assert np.array_equal(body.interval, reference[f"{key}/interval"])
            assert body.motion == expected.get("motion")  # float32 values: exact


def test_denoise_and_translate_match_ctr(samples):
    golden = np.load(samples / "reference_denoised" / "denoised.npz")
    summary = json.loads((samples / "reference_denoised" / "summary.json").read_text())["samples"]
    assert len(summary) == 9
    for name, expected in summary.items():
        joints, info = denoise(parse_skeleton(samples / f"{name}.skeleton"))
        assert info["actors"] == (expected["actor1_bodyIDs"], expected["actor2_bodyIDs"])  # actor order
        for body_id, body in expected["raw_bodies"].items():
            if "motion_after_spread" in body:  # S017C003P020R002A055: the spread check swaps the actors
                assert info["motion"][body_id] == body["motion_after_spread"]
        np.testing.assert_allclose(joints, golden[f"{name}/denoised"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(translate(joints), golden[f"{name}/translated"], rtol=0, atol=1e-6)


def test_prepare_and_export_match_ctr_arrays(samples, tmp_path):
    raw = link_samples(samples, tmp_path / "raw")
    padded = np.load(samples / "reference_denoised" / "padded.npz")
    summary = json.loads((samples / "reference_denoised" / "summary.json").read_text())["samples"]
    report = prepare_ntu(raw, tmp_path / "ntu60", workers=1, export_npz=tmp_path / "npz")
    assert report["prepared"] == 9 and not report["rejected"] and not report["warnings"]

    dataset = open_dataset(tmp_path / "ntu60")
    for i, name in enumerate(dataset.names):
        clip = dataset.clip(i)[:, :dataset.meta("persons")[i]]
        assert np.array_equal(clip.reshape(len(clip), -1), padded[name][:len(clip), :clip[0].size])
        assert dataset.labels[i] == summary[name]["label_0based"]
    for protocol, ctr, key in (("CS", "xsub", "performer"), ("CV", "xview", "camera")):
        with np.load(tmp_path / "npz" / f"NTU60_{protocol}.npz") as arrays:
            for part in ("train", "test"):  # CTR's row order: grouped by subject / camera, then by name
                names = sorted((s[key], n) for n, s in summary.items() if s["split"][protocol] == part)
                assert np.array_equal(arrays[f"x_{part}"], np.stack([padded[n] for _, n in names]))
                y = arrays[f"y_{part}"]
                assert y.shape == (len(names), 60) and y.sum() == len(names)
                assert y.argmax(1).tolist() == [summary[n]["label_0based"] for _, n in names]
                assert dataset.split_indices(ctr, part).size == len(names)

    # NTU120 pads a one-actor clip with a copy of actor 1 instead of zeros.
    prepare_ntu(raw, tmp_path / "ntu120", "ntu120", workers=1, export_npz=tmp_path / "npz")
    with np.load(tmp_path / "npz" / "NTU120_CSub.npz") as arrays:
        x = np.concatenate([arrays["x_train"], arrays["x_test"]])
    x60 = np.stack([padded[n] for n in summary])
    one = np.array([s["actors_kept"] == 1 for s in summary.values()])
    assert x.shape == (9, 300, 150)
    assert row_set(x[~one]) == row_set(x60[~one])
    assert row_set(x[one]) == row_set(np.concatenate([x60[one, :, :75]] * 2, axis=2))


def row_set(x: np.ndarray) -> list[bytes]:
    """The rows of x regardless of their order (NTU120's protocols order them differently)."""
    return sorted(map(bytes, x))


# ----------------------------------------------------------------------------------------------
# Metadata: protocols and missing lists


@pytest.mark.parametrize("version, sizes", [
    ("ntu60", {"xsub": (40091, 16487), "xview": (37646, 18932)}),
    ("ntu120", {"xsub": (63026, 50919), "xset": (54468, 59477)}),
])
def test_protocol_sizes_match_the_metadata(version, sizes):
    stats = shared_dataset("ntu_metadata", version, "statistics")
    names = (stats / "skes_available_name.txt").read_text().split()
    meta = {"name": np.array(names)}
    for key, file in (("subject", "performer"), ("camera", "camera"), ("setup", "setup"), ("label", "label")):
        meta[key] = np.array((stats / f"{file}.txt").read_text().split(), int)
    assert not set(names) & missing_samples(version)
    for protocol, (description, membership) in ntu_protocols(version, meta).items():
        assert ((membership == 0).sum(), (membership == 1).sum()) == sizes[protocol], protocol
        assert (membership >= 0).all() and description
    assert sizes.keys() == ntu_protocols(version, meta).keys()


def test_shipped_missing_lists_equal_the_official_ones():
    official = shared_dataset("ntu_metadata", "official_shahroudy")
    for version, file, count in (("ntu60", "NTU_RGBD_samples_with_missing_skeletons.txt", 302),
                                 ("ntu120", "NTU_RGBD120_samples_with_missing_skeletons.txt", 535)):
        lines = (official / file).read_text().splitlines()
        assert len(lines) > count  # header sentences and a blank line the loader must skip
        assert missing_samples(version) == read_sample_names(official / file)
        assert len(missing_samples(version)) == count
    assert missing_samples("ntu60") < missing_samples("ntu120")


# ----------------------------------------------------------------------------------------------
# Synthetic files


def skeleton_text(frames: list[list[tuple[str, np.ndarray]]], newline: str = "\n") -> str:
    """A valid .skeleton file: per frame, a list of (bodyID, joints (25, 3))."""
    lines = [str(len(frames))]
    for bodies in frames:
        lines.append(str(len(bodies)))
        for body_id, joints in bodies:
            lines += [f"{body_id} 0 1 1 1 1 0 0.02 0.05 2", "25"]
            lines += [f"{x:.7g} {y:.7g} {z:.7g} 250.1 200.2 {900 + 100 * x:.7g} {500 - 100 * y:.7g} 0.9 0.1 0.2 0.3 2"
                      for x, y, z in joints]
    return newline.join(lines) + newline


def person(rng: np.random.Generator, move: float, wide: bool = False) -> np.ndarray:  # (25, 3)
    """A body taller than wide (or wider than tall: the spread filter's noise), shifted by up to `move`."""
    size = np.array([2.0, 0.1, 0.1] if wide else [0.3, 1.5, 0.2])
    return rng.uniform(-0.5, 0.5, (25, 3)) * size + rng.uniform(0, move, 3) + [0, 0, 3]


def test_denoising_branches(tmp_path):
    """Frame 0 has no body; A (valid frames 0-19) and C (19-39) touch in one frame and share actor 1; E
    overlaps them and becomes actor 2; B is in 10 frames (length filter) and D is wider than tall
    (spread filter); frames 40-44 hold only D, so they are removed."""
    rng = np.random.default_rng(0)
    frames: list[list] = [[] for _ in range(46)]
    for body_id, first, last, move, wide in (("111", 1, 20, 1.0, False), ("333", 20, 40, 0.5, False),
                                              ("555", 6, 26, 0.05, False), ("444", 31, 45, 0.5, True)):
        for f in range(first, last + 1):
            frames[f].append((body_id, person(rng, move, wide)))
    for f in (*range(1, 6), *range(31, 36)):  # B vanishes and comes back: CTR's interval is compressed
        frames[f].append(("222", person(rng, 0.3)))
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_text(skeleton_text(frames))
    raw = parse_skeleton(path)
    assert raw.dropped_frames == [0] and raw.num_frames == 45
    assert raw.bodies["222"].interval.tolist() == list(range(10))
    assert raw.bodies["333"].interval.tolist() == list(range(19, 40))

    joints, info = denoise(raw)
    assert set(info["dropped"]) == {"222", "444"}
    assert info["actors"] == (["111", "333"], ["555"]) and info["removed_frames"] == 5
    assert joints.shape == (40, 150)
    assert np.array_equal(joints[19, :75], raw.bodies["333"].joints[:25].ravel())  # the later body wins
    assert not joints[:5, 75:].any() and not joints[26:, 75:].any() and joints[5:26, 75:].all()

    moved = translate(joints)
    assert np.array_equal(moved[:, :75], joints[:, :75] - np.tile(joints[0, 3:6], 25))
    assert not moved[26:, 75:].any()  # an absent actor stays exactly zero
    clip = parse_ntu_file(str(path))
    assert clip.frames.shape == (40, 2, 25, 3) and clip.label == 0
    assert clip.warnings == ["dropped 1 frames with 0 bodies", "removed 5 frames in which no kept body appears",
                             "denoising kept 2 actor(s) for a 1-person action"]


def write_clips(raw: Path, names: list[str], seed: int = 0) -> dict[str, str]:
    """One-person synthetic files, CRLF like the originals; returns name -> text."""
    rng = np.random.default_rng(seed)
    raw.mkdir(exist_ok=True)
    texts = {}
    for name in names:
        frames = [[("72057594037931101", person(rng, 0.2))] for _ in range(int(rng.integers(15, 40)))]
        texts[name] = skeleton_text(frames, newline="\r\n")
        (raw / f"{name}.skeleton").write_bytes(texts[name].encode())
    return texts


def test_bad_files_are_rejected_with_reasons(tmp_path):
    raw = tmp_path / "raw"
    good = write_clips(raw, ["S001C001P001R001A001", "S001C002P002R001A002"])
    lines = good["S001C001P001R001A001"].split("\r\n")
    fields = lines[9].split()  # line 10: a joint line of the first body

    def edited(i: int, line: str) -> str:
        return "\r\n".join(lines[:i] + [line] + lines[i + 1:])

    broken = {
        "S002C001P001R001A003": ("\r\n".join(lines[:40]), "truncated"),
        "S002C001P001R001A004": (edited(3, "24"), "line 4: jointCount is 24, expected 25"),
        "S002C001P001R001A005": (edited(9, " ".join(["0.1", "abc", *fields[2:]])), "line 10: non-numeric"),
        "S002C001P001R001A006": (edited(9, " ".join(["nan", *fields[1:]])), "line 10: non-finite"),
        "S002C001P001R001A007": (edited(9, " ".join([*fields, "7"])), "line 10: joint line has 13 fields"),
        "S002C001P001R001A008": ("", "empty file"),
        "S002C001P001R001A009": ("\r\n".join(lines[:1] + ["2"] + lines[2:29] * 2 + lines[29:]), "appears twice"),
        "S002C001P001R001A999": (good["S001C001P001R001A001"], "not one of the 60 ntu60 classes"),
        "not_an_ntu_name": (good["S001C001P001R001A001"], "does not match"),
    }
    for name, (text, _) in broken.items():
        (raw / f"{name}.skeleton").write_text(text)
    (raw / "S001C002P005R002A008.skeleton").write_text(good["S001C001P001R001A001"])  # officially missing
    (raw / "S018C001P001R001A001.skeleton").write_text(good["S001C001P001R001A001"])  # an NTU120 setup

    report = prepare_ntu(raw, tmp_path / "out", workers=1)
    assert report["prepared"] == 2 and report["sources"] == 13
    reasons = {Path(entry["file"]).stem: entry["reason"] for entry in report["rejected"]}
    assert reasons.keys() == broken.keys()
    for name, (_, expected) in broken.items():
        assert expected in reasons[name], reasons[name]
    skipped = {Path(entry["file"]).stem: entry["reason"] for entry in report["skipped"]}
    assert skipped == {"S001C002P005R002A008": MISSING_REASON, "S018C001P001R001A001": "setup not in ntu60 (S001-S017)"}
    assert json.loads((tmp_path / "out" / runner.REPORT).read_text()) == report

    with pytest.raises(UserError) as error:
        prepare_ntu(raw, tmp_path / "strict", workers=1, strict=True)
    assert error.value.exit_code != 0 and not (tmp_path / "strict").exists()
    with pytest.raises(UserError, match="no .skeleton files"):
        prepare_ntu(tmp_path / "out", tmp_path / "none")


def test_interrupted_prepare_resumes_to_the_same_dataset(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    write_clips(raw, [f"S001C00{c}P00{p}R001A0{a:02d}" for c in (1, 2) for p in (1, 3) for a in (1, 50)])
    monkeypatch.setattr(ntu, "prepare", partial(runner.prepare, chunk_size=3))
    prepare_ntu(raw, tmp_path / "whole", workers=1)

    run_chunk, parsed = runner._run_chunk, []

    def killed_after(chunks: int | None):
        def spy(spec, parse, index, *rest):
            if len(parsed) == chunks:
                raise RuntimeError("killed")
            parsed.append(index)
            return run_chunk(spec, parse, index, *rest)
        return spy

    monkeypatch.setattr(runner, "_run_chunk", killed_after(1))
    with pytest.raises(RuntimeError, match="killed"):
        prepare_ntu(raw, tmp_path / "resumed", workers=1)
    assert not (tmp_path / "resumed").exists()
    assert [p.name for p in (tmp_path / "resumed.partial").glob("chunk-*.npz")] == ["chunk-000000.npz"]
    monkeypatch.setattr(runner, "_run_chunk", killed_after(None))
    prepare_ntu(raw, tmp_path / "resumed", workers=1)
    assert parsed == [0, 1, 2]  # the finished chunk was not parsed again

    arrays = [yaml.safe_load((tmp_path / run / "dataset.yaml").read_text())["arrays"] for run in ("whole", "resumed")]
    assert arrays[0] == arrays[1]
    assert not (tmp_path / "resumed.partial").exists()
