"""Custom skeletons: every input form round-trips exactly; bad clips and labels are reported."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cascade_cli.data.custom import prepare_custom
from cascade_cli.data.format import open_dataset
from cascade_cli.errors import UserError

rng = np.random.default_rng(0)


def _clip(*shape) -> np.ndarray:
    return rng.normal(size=shape).astype(np.float32)


def _by_name(ds) -> dict[str, int]:
    return {name: i for i, name in enumerate(ds.names)}


def test_clip_files_round_trip(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    data = {"walk_01": _clip(5, 17, 2), "walk_02": _clip(3, 2, 17, 2), "run_01": _clip(4, 17, 2),
            "run_02": _clip(2, 1, 17, 2)}
    np.save(clips / "walk_01.npy", data["walk_01"])
    np.savez(clips / "walk_02.npz", data=data["walk_02"])
    (clips / "run_01.json").write_text(json.dumps(data["run_01"].tolist()))
    (clips / "run_02.json").write_text(json.dumps({"data": data["run_02"].tolist()}))
    np.save(clips / "bad_01.npy", _clip(5, 18, 2))  # wrong joint count
    np.save(clips / "extra_01.npy", _clip(5, 17, 2))  # no label row
    (tmp_path / "labels.csv").write_text("clip,label,split,subject,camera\n"
                                         "walk_01,walk,train,1,2\nwalk_02,walk,test,3,\nrun_01,run,Train,,\n"
                                         "run_02,run,test,4,1\nbad_01,run,train,,\njump_01,jump,train,,\n")
    report = prepare_custom(clips, tmp_path / "labels.csv", tmp_path / "out", layout="coco17", workers=2)

    assert report["prepared"] == 4
    reasons = {entry["file"].rsplit("/", 1)[1]: entry["reason"] for entry in report["rejected"]}
    assert reasons == {"bad_01.npy": "18 joints, layout coco17 has 17: shape (5, 1, 18, 2); expected "
                                     "(T, [M,] 17, 2), or (T, [M,] 17, 3) with a confidence channel",
                       "extra_01.npy": f"no row for clip 'extra_01' in {tmp_path / 'labels.csv'}"}
    orphan = {"file": str(tmp_path / "labels.csv"), "message": "line 7: no clip file for 'jump_01'"}
    assert report["warnings"] == [orphan]
    assert json.loads((tmp_path / "out" / "prepare_report.json").read_text())["warnings"] == [orphan]

    ds = open_dataset(tmp_path / "out")
    assert ds.class_names == ["jump", "run", "walk"] and ds.persons == 2 and not ds.has_confidence
    assert ds.layout.name == "coco17" and ds.layout.coords == 2
    index = _by_name(ds)
    for name, array in data.items():
        clip = ds.clip(index[name])
        array = array[:, None] if array.ndim == 3 else array
        np.testing.assert_array_equal(clip[:, :array.shape[1]], array)
        assert not clip[:, array.shape[1]:].any()  # absent persons are zeros
    assert [ds.labels[index[n]] for n in ("walk_01", "run_02")] == [2, 1]
    assert [ds.meta("subject")[index[n]] for n in ("walk_01", "walk_02", "run_01")] == [1, 3, -1]
    assert ds.meta("camera")[index["walk_01"]] == 2
    assert ds.protocols["split"]["counts"] == {"train": 2, "test": 2}

    with pytest.raises(UserError, match="bad_01.npy: 18 joints, layout coco17 has 17"):
        prepare_custom(clips, tmp_path / "labels.csv", tmp_path / "strict", layout="coco17", strict=True, workers=1)


def test_confidence_and_3d(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    channel, xyz, conf = _clip(6, 33, 4), _clip(3, 33, 3), _clip(3, 33)
    np.save(clips / "a.npy", channel)  # confidence as the last channel: decides for the dataset
    np.savez(clips / "b.npz", data=xyz, confidence=conf)  # confidence as its own array
    (clips / "c.json").write_text(json.dumps({"data": xyz.tolist()}))  # none: rejected
    (tmp_path / "labels.csv").write_text("clip,label\na,wave\nb,wave\nc,sit\n")
    report = prepare_custom(clips, tmp_path / "labels.csv", tmp_path / "out", layout="mediapipe33", workers=1)
    assert [entry["reason"] for entry in report["rejected"]] == ["no confidence, but the dataset's first clip has one"]
    assert report["protocols"] == {"all": {"description": "every clip is training data (labels.csv has no split "
                                                          "column)", "train": 2, "test": 0}}
    ds = open_dataset(tmp_path / "out")
    assert ds.has_confidence and ds.layout.coords == 3 and ds.class_names == ["sit", "wave"]
    np.testing.assert_array_equal(ds.clip(0)[:, 0], channel[..., :3])
    np.testing.assert_array_equal(ds.clip_confidence(0)[:, 0], channel[..., 3])
    np.testing.assert_array_equal(ds.clip(1)[:, 0], xyz)
    np.testing.assert_array_equal(ds.clip_confidence(1)[:, 0], conf)

    # 2-D keypoints lifted to 3-D: the same coco17 joints with coords=3, and no confidence.
    lifted = tmp_path / "lifted"
    lifted.mkdir()
    np.save(lifted / "a.npy", xyz[:, :17])
    prepare_custom(lifted, tmp_path / "labels.csv", tmp_path / "out3", layout="coco17", coords=3)
    ds = open_dataset(tmp_path / "out3")
    assert ds.layout.coords == 3 and ds.layout.num_joints == 17 and not ds.has_confidence
    np.testing.assert_array_equal(ds.clip(0)[:, 0], xyz[:, :17])


@pytest.mark.parametrize("form", ["array", "channel"])
def test_single_npz_with_lengths(tmp_path, form):
    data, conf, lengths = _clip(3, 6, 2, 25, 2), _clip(3, 6, 2, 25), np.array([6, 2, 4])
    if form == "array":
        np.savez(tmp_path / "all.npz", data=data, lengths=lengths, confidence=conf)
    else:
        np.savez(tmp_path / "all.npz", data=np.concatenate([data, conf[..., None]], -1), lengths=lengths)
    (tmp_path / "labels.csv").write_text("clip,label,split\n0,0,train\n1,2,test\n002,2,train\n")
    prepare_custom(tmp_path / "all.npz", tmp_path / "labels.csv", tmp_path / "out", layout="openpose25", workers=1)
    ds = open_dataset(tmp_path / "out")
    assert list(ds.names) == ["0", "1", "2"] and list(ds.labels) == [0, 2, 2] and ds.class_names == ["0", "1", "2"]
    assert list(ds.lengths) == [6, 2, 4] and ds.persons == 2 and ds.has_confidence
    for i, T in enumerate(lengths):
        np.testing.assert_array_equal(ds.clip(i), data[i, :T])
        np.testing.assert_array_equal(ds.clip_confidence(i), conf[i, :T])
    np.testing.assert_array_equal(ds.split_indices("split", "test"), [1])


def test_bad_arguments(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    np.save(clips / "a.npy", _clip(2, 13, 2))
    (tmp_path / "labels.csv").write_text("clip,label\na,x\n")
    with pytest.raises(UserError, match="unknown skeleton layout 'penn'; known layouts: coco17, kinect_v1_20"):
        prepare_custom(clips, tmp_path / "labels.csv", tmp_path / "out", layout="penn")
    with pytest.raises(UserError, match="coords must be 2 or 3"):
        prepare_custom(clips, tmp_path / "labels.csv", tmp_path / "out", layout="penn13", coords=4)
    (tmp_path / "nolabel.csv").write_text("clip,class\na,x\n")
    with pytest.raises(UserError, match="nolabel.csv: the header must name the columns clip and label"):
        prepare_custom(clips, tmp_path / "nolabel.csv", tmp_path / "out", layout="penn13")
    (tmp_path / "badsplit.csv").write_text("clip,label,split\na,x,val\n")
    with pytest.raises(UserError, match="badsplit.csv line 2: split 'val' is not train or test"):
        prepare_custom(clips, tmp_path / "badsplit.csv", tmp_path / "out", layout="penn13")
    np.save(clips / "b.npy", _clip(2, 13, 2))
    (clips / "b.json").write_text("[]")
    with pytest.raises(UserError, match="would both be clip 'b'"):
        prepare_custom(clips, tmp_path / "labels.csv", tmp_path / "out", layout="penn13")


def test_many_clips_in_worker_processes(tmp_path):
    """More clips than one chunk, so labels and the single .npz are read inside the worker processes."""
    data, lengths = _clip(150, 4, 13, 2), rng.integers(1, 5, 150)
    np.savez(tmp_path / "all.npz", data=data, lengths=lengths)
    (tmp_path / "labels.csv").write_text("clip,label\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(150)))
    report = prepare_custom(tmp_path / "all.npz", tmp_path / "labels.csv", tmp_path / "out", layout="penn13", workers=2)
    ds = open_dataset(tmp_path / "out")
    assert report["prepared"] == 150 and list(ds.labels) == [i % 2 for i in range(150)]
    for i in (0, 77, 149):
        np.testing.assert_array_equal(ds.clip(i)[:, 0], data[i, :lengths[i]])
