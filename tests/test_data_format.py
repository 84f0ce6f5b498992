from pathlib import Path

import numpy as np
import pytest
import yaml

from cascade_cli.data.format import DatasetWriter, open_dataset
from cascade_cli.errors import UserError
from cascade_cli.layouts import LAYOUTS, NTU25, Layout, get_layout

TOY = Layout(name="toy3", joint_names=("root", "mid", "tip"), bones=((1, 0), (2, 1)), coords=3)
CLASSES = ["sit", "stand", "spin"]
# (frames [T, M', 3, 3], label, name, subject, camera, setup)
RNG = np.random.default_rng(0)
CLIPS = [
    (RNG.normal(size=(5, 1, 3, 3)), 0, "a", 1, 1, -1),
    (RNG.normal(size=(1, 2, 3, 3)), 2, "b", 2, 3, 7),
    (RNG.normal(size=(9, 2, 3, 3)), 1, "c", 3, -1, -1),
    (RNG.normal(size=(4, 1, 3, 3)), 2, "d", 4, 2, 8),
]


def write_toy(out_dir: Path, overwrite: bool = False) -> Path:
    with DatasetWriter(out_dir, "toy", TOY, persons=2, class_names=CLASSES, overwrite=overwrite) as writer:
        for frames, label, name, subject, camera, setup in CLIPS:
            writer.add_clip(frames, label, name, subject=subject, camera=camera, setup=setup)
        writer.set_protocol("xsub", "odd subjects train", [0, 1, 0, 1])
        writer.set_protocol("first3", "first three clips only", [0, 0, 1, -1])
    return out_dir


def test_round_trip(tmp_path):
    ds = open_dataset(write_toy(tmp_path / "toy"))
    assert (ds.name, ds.layout, ds.persons, ds.class_names, ds.num_classes) == ("toy", TOY, 2, CLASSES, 3)
    assert ds.num_clips == 4
    np.testing.assert_array_equal(ds.lengths, [5, 1, 9, 4])
    np.testing.assert_array_equal(ds.offsets, [0, 5, 6, 15])
    np.testing.assert_array_equal(ds.labels, [0, 2, 1, 2])
    assert list(ds.names) == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(ds.meta("subject"), [1, 2, 3, 4])
    np.testing.assert_array_equal(ds.meta("camera"), [1, 3, -1, 2])
    np.testing.assert_array_equal(ds.meta("setup"), [-1, 7, -1, 8])
    np.testing.assert_array_equal(ds.meta("persons"), [1, 2, 2, 1])
    for i, (frames, *_) in enumerate(CLIPS):
        clip = ds.clip(i)
        assert clip.shape == (len(frames), 2, 3, 3) and clip.dtype == np.float32
        np.testing.assert_array_equal(clip[:, :frames.shape[1]], frames.astype(np.float32))
        assert not clip[:, frames.shape[1]:].any()  # missing persons are zeros
    assert ds.protocols["xsub"] == {"description": "odd subjects train", "counts": {"train": 2, "test": 2}}
    assert ds.protocols["first3"]["counts"] == {"train": 2, "test": 1}
    np.testing.assert_array_equal(ds.split_indices("xsub", "test"), [1, 3])
    np.testing.assert_array_equal(ds.split_indices("first3", "train"), [0, 1])
    np.testing.assert_array_equal(ds.split_indices("first3", "test"), [2])
    assert ds.split_indices("xsub", "train").dtype == np.int64
    assert ds.verify() == []
    manifest = yaml.safe_load((tmp_path / "toy" / "dataset.yaml").read_text())
    assert manifest["counts"] == {"clips": 4, "frames": 19}
    assert manifest["arrays"]["frames"]["shape"] == [19, 2, 3, 3]
    assert manifest["created_by"].startswith("cascade ")


def test_frames_are_memory_mapped_and_clips_are_copies(tmp_path):
    ds = open_dataset(write_toy(tmp_path / "toy"))
    assert isinstance(ds.frames, np.memmap)
    clip = ds.clip(0)
    assert not isinstance(clip, np.memmap) and clip.flags.writeable
    clip[:] = 0
    assert ds.clip(0).any()


def test_same_content_gives_identical_bytes(tmp_path):
    first, second = write_toy(tmp_path / "one"), write_toy(tmp_path / "two")
    for file in ("dataset.yaml", "frames.f32", "clips.npz"):
        assert (first / file).read_bytes() == (second / file).read_bytes(), file


def test_verify_detects_a_corrupted_byte(tmp_path):
    path = write_toy(tmp_path / "toy")
    with open(path / "frames.f32", "r+b") as f:
        f.seek(101)
        byte = f.read(1)
        f.seek(101)
        f.write(bytes([byte[0] ^ 0x40]))
    problems = open_dataset(path).verify()  # opening does not hash, so it still succeeds
    assert len(problems) == 1 and "frames.f32" in problems[0]


def test_exception_inside_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with DatasetWriter(tmp_path / "toy", "toy", TOY, 2, CLASSES) as writer:
            writer.add_clip(CLIPS[0][0], 0, "a")
            raise RuntimeError("converter crashed")
    assert list(tmp_path.iterdir()) == []


def test_invalid_protocol_length_fails_at_exit_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="membership"):
        with DatasetWriter(tmp_path / "toy", "toy", TOY, 2, CLASSES) as writer:
            writer.add_clip(CLIPS[0][0], 0, "a")
            writer.set_protocol("xsub", "", [0, 1])
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite_and_is_replaced_only_when_complete(tmp_path):
    path = write_toy(tmp_path / "toy")
    with pytest.raises(UserError, match=str(path)):
        DatasetWriter(path, "toy", TOY, 2, CLASSES)
    with pytest.raises(RuntimeError):
        with DatasetWriter(path, "other", TOY, 2, CLASSES, overwrite=True) as writer:
            writer.add_clip(CLIPS[0][0], 0, "a")
            raise RuntimeError
    assert open_dataset(path).num_clips == 4  # the old dataset survived the failed rewrite
    with DatasetWriter(path, "other", TOY, 2, CLASSES, overwrite=True) as writer:
        writer.add_clip(CLIPS[0][0], 0, "a")
    replaced = open_dataset(path)
    assert (replaced.name, replaced.num_clips) == ("other", 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]


def test_add_clip_rejects_bad_clips_naming_them(tmp_path):
    with pytest.raises(ValueError), DatasetWriter(tmp_path / "toy", "toy", TOY, 2, CLASSES) as writer:
        with pytest.raises(ValueError, match="clip wide"):
            writer.add_clip(np.zeros((4, 3, 3, 3)), 0, "wide")  # 3 persons > 2
        with pytest.raises(ValueError, match="clip flat"):
            writer.add_clip(np.zeros((4, 1, 3, 2)), 0, "flat")  # 2-D coords in a 3-D layout
        with pytest.raises(ValueError, match="clip empty"):
            writer.add_clip(np.zeros((0, 1, 3, 3)), 0, "empty")
        with pytest.raises(ValueError, match="clip odd"):
            writer.add_clip(np.zeros((4, 1, 3, 3)), 3, "odd")  # label out of range
        nan = np.zeros((4, 1, 3, 3))
        nan[2, 0, 1, 0] = np.nan
        with pytest.raises(UserError, match="clip broken"):
            writer.add_clip(nan, 0, "broken")
    # Nothing valid was added, so publishing refuses and no dataset appears.
    assert list(tmp_path.iterdir()) == []


def test_missing_manifest_names_the_file(tmp_path):
    with pytest.raises(UserError, match="dataset.yaml"):
        open_dataset(tmp_path)


def test_unsupported_version_names_the_file(tmp_path):
    path = write_toy(tmp_path / "toy")
    manifest = yaml.safe_load((path / "dataset.yaml").read_text())
    manifest["format_version"] = 2
    (path / "dataset.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(UserError, match=r"dataset\.yaml.*format_version 2"):
        open_dataset(path)


def test_truncated_frames_name_the_file(tmp_path):
    path = write_toy(tmp_path / "toy")
    data = (path / "frames.f32").read_bytes()
    (path / "frames.f32").write_bytes(data[:-4])
    with pytest.raises(UserError, match=r"frames\.f32.*expected"):
        open_dataset(path)


def test_corrupt_clip_table_names_the_file(tmp_path):
    path = write_toy(tmp_path / "toy")
    (path / "clips.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match=r"clips\.npz"):
        open_dataset(path)


def test_protocol_resolution(tmp_path):
    ds = open_dataset(write_toy(tmp_path / "toy"))
    with pytest.raises(UserError, match="data.protocol"):
        ds.split_indices("", "train")  # two protocols and none chosen
    with pytest.raises(UserError, match="xsub, first3"):
        ds.split_indices("xview", "train")
    with DatasetWriter(tmp_path / "single", "single", TOY, 1, CLASSES) as writer:
        writer.add_clip(np.ones((2, 1, 3, 3)), 0, "a")
        writer.add_clip(np.ones((2, 1, 3, 3)), 1, "b")
        writer.set_protocol("only", "", [1, 0])
    np.testing.assert_array_equal(open_dataset(tmp_path / "single").split_indices("", "test"), [0])


def test_layouts():
    assert NTU25.num_joints == 25 and len(NTU25.bones) == 24 and NTU25.coords == 3
    assert Layout.from_dict(NTU25.to_dict()) == NTU25
    assert get_layout("ntu25") is LAYOUTS["ntu25"] is NTU25
    with pytest.raises(UserError, match="ntu25"):
        get_layout("no_such_layout")
    # The 24 bones connect all 25 joints into one tree, each child listed once.
    children = [c for c, _ in NTU25.bones]
    assert len(set(children)) == 24 and set(range(25)) - set(children) == {20}  # SpineShoulder is the root
    assert NTU25.joint_names[3] == "Head" and NTU25.joint_names[20] == "SpineShoulder"
    with pytest.raises(ValueError):
        Layout("bad", ("a", "b"), ((0, 2),), 3)
