"""Penn Action: the whole real annotation set, and broken .mat files made here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io

from cascade_cli.data.format import open_dataset
from cascade_cli.data.penn import parse_penn_file, prepare_penn
from cascade_cli.data.registry import PENN_ACTION
from cascade_cli.errors import UserError
from tests.conftest import shared_dataset

# data_formats.md §2.3: class order and per-class train / test counts of the official split.
CLASSES = ["baseball_pitch", "baseball_swing", "bench_press", "bowl", "clean_and_jerk", "golf_swing", "jump_rope",
           "jumping_jacks", "pullup", "pushup", "situp", "squat", "strum_guitar", "tennis_forehand", "tennis_serve"]
TRAIN = [104, 115, 69, 135, 43, 89, 40, 56, 98, 104, 50, 114, 46, 80, 115]
TEST = [63, 58, 71, 85, 45, 77, 42, 56, 101, 107, 50, 117, 48, 77, 71]


@pytest.fixture(scope="module")
def penn(tmp_path_factory):
    labels = shared_dataset("penn_action", "labels")
    out = tmp_path_factory.mktemp("penn") / "penn"
    report = prepare_penn(labels.parent, out, workers=2)  # the Penn_Action root, holding labels/
    return labels, report, open_dataset(out)


def test_full_penn(penn):
    _, report, ds = penn
    assert report["prepared"] == ds.num_clips == 2326
    assert report["rejected"] == [] and report["warnings"] == []
    assert report["protocols"]["official"]["train"] == 1258 and report["protocols"]["official"]["test"] == 1068
    assert ds.class_names == list(PENN_ACTION.class_names) == CLASSES
    assert ds.layout.name == "penn13" and ds.layout.coords == 2 and ds.persons == 1 and ds.has_confidence
    train, test = ds.split_indices("official", "train"), ds.split_indices("official", "test")
    np.testing.assert_array_equal(np.bincount(ds.labels[train], minlength=15), TRAIN)
    np.testing.assert_array_equal(np.bincount(ds.labels[test], minlength=15), TEST)
    assert ds.lengths.sum() == 163841 and ds.lengths.min() == 18 and ds.lengths.max() == 663
    frames = np.asarray(ds.frames)
    assert np.isfinite(frames).all() and frames.min() >= 0
    visibility = np.fromfile(ds.path / "confidence.f32", np.float32)
    assert set(np.unique(visibility)) == {0.0, 1.0} and abs(1 - visibility.mean() - 0.220) < 0.001
    assert set(ds.meta("camera")) == {0, 1, 2, 3} and ds.meta("width").min() > 0 and ds.meta("height").min() > 0
    assert json.loads((ds.path / "prepare_report.json").read_text())["prepared"] == 2326


def test_short_bbox_files_and_unsigned_dtypes(penn):
    labels, _, ds = penn
    index = {name: i for i, name in enumerate(ds.names)}
    assert ds.lengths[index["1154"]] == 72 and ds.lengths[index["1865"]] == 73  # bbox has 71 / 72 rows
    # 0088.mat stores x as uint16 and y as uint8: values must come through unchanged.
    mat = scipy.io.loadmat(labels / "0088.mat", squeeze_me=True)
    assert mat["x"].dtype == np.uint16 and mat["y"].dtype == np.uint8
    i = index["0088"]
    np.testing.assert_array_equal(ds.clip(i)[:, 0], np.stack([mat["x"], mat["y"]], -1).astype(np.float32))
    np.testing.assert_array_equal(ds.clip_confidence(i)[:, 0], mat["visibility"])
    assert (ds.meta("height")[i], ds.meta("width")[i]) == (270, 480) and ds.labels[i] == 0
    assert ds.meta("camera")[i] == 0 and ds.meta("official_train")[i] in (1, -1)  # pose "back"


def write_mat(path, T=5, drop=(), **fields):
    """A synthetic Penn-style .mat file with the dtypes of the real ones (bbox one row short)."""
    rng = np.random.default_rng(T)
    content = dict(action="squat", pose="left", x=rng.uniform(0, 480, (T, 13)).astype(np.uint16),
                   y=rng.uniform(0, 360, (T, 13)), visibility=(rng.random((T, 13)) > 0.2).astype(np.uint8),
                   train=np.array([[-1]], np.int32), bbox=np.zeros((T - 1, 4)),
                   dimensions=np.array([360, 480, T], np.uint16), nframes=np.array([[T]], np.uint8))
    content.update(fields)
    scipy.io.savemat(path, {k: v for k, v in content.items() if k not in drop})


def test_broken_files_are_rejected_with_reasons(tmp_path):
    labels = tmp_path / "Penn_Action" / "labels"
    labels.mkdir(parents=True)
    write_mat(labels / "0001.mat")
    write_mat(labels / "0002.mat", T=1)  # squeeze_me turns (1, 13) into (13,)
    write_mat(labels / "0003.mat", drop=("x",))
    write_mat(labels / "0004.mat", visibility=np.ones((4, 13), np.uint8))
    write_mat(labels / "0005.mat", action="bowling")
    write_mat(labels / "0006.mat", y=np.full((5, 13), np.nan))
    write_mat(labels / "0007.mat", train=np.array([[0]], np.int32))
    (labels / "0008.mat").write_bytes(b"not a mat file")
    report = prepare_penn(labels, tmp_path / "out", workers=1)  # the labels/ folder itself

    reasons = {entry["file"].rsplit("/", 1)[1]: entry["reason"] for entry in report["rejected"]}
    assert report["prepared"] == 2 and len(reasons) == 6
    assert reasons["0003.mat"] == "missing field(s) x"
    assert "'visibility' has shape (4, 13), expected (nframes=5, 13)" == reasons["0004.mat"]
    assert reasons["0005.mat"] == "unknown action 'bowling'"
    assert "non-finite" in reasons["0006.mat"] and "'train' is 0" in reasons["0007.mat"]
    assert reasons["0008.mat"].startswith("unreadable .mat file")

    ds = open_dataset(tmp_path / "out")
    assert list(ds.names) == ["0001", "0002"] and list(ds.lengths) == [5, 1]
    assert ds.labels[0] == PENN_ACTION.class_names.index("squat") and ds.meta("camera")[0] == 2
    assert ds.protocols["official"]["counts"] == {"train": 0, "test": 2}
    clip = parse_penn_file(str(labels / "0001.mat"))
    np.testing.assert_array_equal(ds.clip(0), clip.frames)
    with pytest.raises(UserError, match="0003.mat: missing field"):
        prepare_penn(labels, tmp_path / "strict", workers=1, strict=True)
