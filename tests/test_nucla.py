"""N-UCLA: the whole real all_sqe set, the official joint order, and broken JSON files made here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cascade_cli.data.format import open_dataset
from cascade_cli.data.nucla import parse_nucla_file, prepare_nucla
from cascade_cli.data.registry import NW_UCLA
from cascade_cli.errors import UserError
from cascade_cli.layouts import KINECT_V1_20
from tests.conftest import shared_dataset

# data_formats.md §3.2: per-class train (views 1+2) / test (view 3) counts.
TRAIN = [102, 102, 96, 124, 101, 102, 99, 99, 98, 97]
TEST = [48, 50, 45, 49, 47, 47, 43, 43, 47, 45]
# cascadeformer.md §B.8: SkateFormer's partition order.
OFFICIAL = [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 1, 2, 0, 3]


@pytest.fixture(scope="module")
def nucla(tmp_path_factory):
    all_sqe = shared_dataset("nw_ucla", "all_sqe")
    out = tmp_path_factory.mktemp("nucla") / "nucla"
    return all_sqe, prepare_nucla(all_sqe.parent, out, workers=2), open_dataset(out)


def test_full_nucla(nucla):
    all_sqe, report, ds = nucla
    assert report["prepared"] == ds.num_clips == 1484 and report["rejected"] == []
    assert (report["protocols"]["cross_view"]["train"], report["protocols"]["cross_view"]["test"]) == (1020, 464)
    # The only warnings are the 2 files with (0, 0, 0) joints (12 entries in all).
    assert sorted(w["file"].rsplit("/", 1)[1] for w in report["warnings"]) == ["a04_s01_e01_v01.json",
                                                                             "a04_s04_e02_v01.json"]
    assert all(w["message"] == "6 joint position(s) are exactly (0, 0, 0)" for w in report["warnings"])
    assert ds.class_names == list(NW_UCLA.class_names) and len(NW_UCLA.class_names) == 10
    assert ds.layout == KINECT_V1_20 and ds.persons == 1 and not ds.has_confidence
    train, test = ds.split_indices("cross_view", "train"), ds.split_indices("cross_view", "test")
    np.testing.assert_array_equal(np.bincount(ds.labels[train], minlength=10), TRAIN)
    np.testing.assert_array_equal(np.bincount(ds.labels[test], minlength=10), TEST)
    assert set(ds.meta("camera")[test]) == {3} and set(ds.meta("camera")[train]) == {1, 2}
    assert ds.lengths.min() == 1 and ds.lengths.max() == 201 and np.isfinite(np.asarray(ds.frames)).all()

    i = list(ds.names).index("a02_s09_e04_v02")  # a 1-frame clip
    raw = json.loads((all_sqe / "a02_s09_e04_v02.json").read_text())
    assert ds.lengths[i] == 1 and ds.labels[i] == 1
    assert (ds.meta("subject")[i], ds.meta("setup")[i], ds.meta("camera")[i]) == (9, 4, 2)
    np.testing.assert_array_equal(ds.clip(i)[:, 0], np.asarray(raw["skeletons"], np.float32))


def test_official_joint_order(nucla):
    all_sqe, _, _ = nucla
    layout = NW_UCLA.joint_order("official").layout
    assert layout.name == "kinect_v1_20_official"
    assert list(layout.joint_names) == [KINECT_V1_20.joint_names[j] for j in OFFICIAL]
    assert layout.joint_names[16:] == ("Spine", "ShoulderCenter", "HipCenter", "Head")
    path = str(all_sqe / "a12_s10_e04_v03.json")
    kinect, official = parse_nucla_file(path), parse_nucla_file(path, joint_order="official")
    np.testing.assert_array_equal(official.frames, kinect.frames[:, :, OFFICIAL])
    # Bones join the same joints, so bone vectors are the same in both orders.
    for (c, p), (c2, p2) in zip(KINECT_V1_20.bones, layout.bones):
        np.testing.assert_array_equal(kinect.frames[:, :, c] - kinect.frames[:, :, p],
                                      official.frames[:, :, c2] - official.frames[:, :, p2])


def write_clip_json(folder, stem, skeletons=None, label=3, **fields):
    T = 4
    skeletons = np.arange(T * 60, dtype=float).reshape(T, 20, 3).tolist() if skeletons is None else skeletons
    (folder / f"{stem}.json").write_text(json.dumps({"file_name": stem, "skeletons": skeletons, "label": label,
                                                     **fields}))


def test_broken_files_are_rejected_with_reasons(tmp_path):
    folder = tmp_path / "all_sqe"
    folder.mkdir()
    write_clip_json(folder, "a03_s01_e00_v01")
    write_clip_json(folder, "a03_s02_e01_v03", skeletons=[[[0.0, 0.0, 0.0]] * 20])  # 1 frame, all joints zero
    write_clip_json(folder, "a03_s03_e00_v01", label=11)
    write_clip_json(folder, "a03_s04_e00_v01", skeletons=[[[1.0, 2.0, 3.0]] * 19])
    write_clip_json(folder, "a03_s05_e00_v01", skeletons=[[[float("nan"), 0.0, 0.0]] * 20])
    write_clip_json(folder, "clip_one")
    (folder / "a03_s06_e00_v01.json").write_text('{"file_name": "a03_s06_e00_v01", "skeletons": [[')
    (folder / "a03_s07_e00_v01.json").write_text('{"file_name": "a03_s07_e00_v01", "label": 3}')
    report = prepare_nucla(tmp_path, tmp_path / "out", joint_order="official", workers=1)

    reasons = {entry["file"].rsplit("/", 1)[1]: entry["reason"] for entry in report["rejected"]}
    assert report["prepared"] == 2 and len(reasons) == 6
    assert reasons["a03_s03_e00_v01.json"] == "label 11 is not an integer in 1..10"
    assert reasons["a03_s04_e00_v01.json"] == "skeletons of shape (1, 19, 3), expected [T >= 1][20][3]"
    assert "non-finite" in reasons["a03_s05_e00_v01.json"]
    assert reasons["clip_one.json"] == "file name does not match aAA_sSS_eEE_vVV"
    assert reasons["a03_s06_e00_v01.json"].startswith("malformed JSON")
    assert reasons["a03_s07_e00_v01.json"] == "missing key(s) skeletons"
    assert [w["message"] for w in report["warnings"]] == ["20 joint position(s) are exactly (0, 0, 0)"]

    ds = open_dataset(tmp_path / "out")
    assert ds.layout.name == "kinect_v1_20_official" and list(ds.lengths) == [4, 1]
    assert ds.protocols["cross_view"]["counts"] == {"train": 1, "test": 1} and list(ds.labels) == [2, 2]
    with pytest.raises(UserError, match="a03_s03_e00_v01.json: label 11"):
        prepare_nucla(folder, tmp_path / "strict", workers=1, strict=True)
    with pytest.raises(UserError, match="joint order"):
        prepare_nucla(folder, tmp_path / "bad", joint_order="skateformer")
