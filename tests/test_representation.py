"""Bone representations (paper Table 8) and the dataset-specific pipeline options of issue 3."""

import numpy as np
import pytest

from cascade_cli.config import DataConfig
from cascade_cli.data.format import DatasetWriter, open_dataset
from cascade_cli.data.pipeline import ClipDataset, drop_parts, model_input_shape, normalize
from cascade_cli.data.representation import bone_parameters, output_shape, represent
from cascade_cli.errors import UserError
from cascade_cli.layouts import Layout

BONES = np.array([[1, 0], [2, 1]])  # child, parent


def test_bone_subtraction_and_concatenation():
    x = np.array([[[0.0, 0.0], [1.0, 2.0], [4.0, 6.0]]], np.float32)  # (T=1, J=3, C=2)
    np.testing.assert_array_equal(represent(x, "bone_sub", BONES), [[[1, 2], [3, 4]]])
    np.testing.assert_array_equal(represent(x, "bone_concat", BONES), [[[1, 2], [0, 0], [4, 6], [1, 2]]])
    assert represent(x, "joints", BONES) is x
    assert output_shape("bone_concat", 3, 2, 2) == (4, 2) and output_shape("bone_param", 3, 2, 3) == (2, 4)


def test_bone_parameters_keep_the_sign_unless_the_official_clamp_is_asked_for():
    child = np.array([[2.0, 1.0]])
    parent = np.array([[0.0, 3.0]])  # dx = -2, dy = +2: slope -1 through (2, 1): intercept 3
    np.testing.assert_allclose(bone_parameters(child, parent, "sign"), [[-1.0, 3.0]])
    # The official clamp(dx, min=1e-6) turns dx = -2 into 1e-6: slope +2e6, clipped to +10.
    np.testing.assert_allclose(bone_parameters(child, parent, "official"), [[10.0, 1.0 - 10.0 * 2.0]])
    # A vertical bone (dx = 0) stays finite in both modes; 3-D gives slope/intercept per other axis.
    vertical = bone_parameters(np.array([[1.0, 0.0, 0.0]]), np.array([[1.0, 5.0, -5.0]]), "sign")
    np.testing.assert_allclose(vertical, [[10.0, -10.0, -10.0, 10.0]])


def test_normalizations():
    x = np.array([[[[0.0, 10.0], [4.0, 30.0]]]], np.float32)  # (T=1, P=1, J=2, C=2)
    np.testing.assert_allclose(normalize(x, "minmax", None), [[[[-1, -1], [1, 1]]]])
    np.testing.assert_allclose(normalize(x, "image", (4.0, 40.0)), [[[[-1, -0.5], [1, 0.5]]]])


def test_drops_zero_what_they_promise():
    x = np.ones((40, 1, 20, 3), np.float32)
    rng = np.random.default_rng(0)
    axis = drop_parts(x, DataConfig(axis_drop=1.0), rng)
    assert sorted(int((axis[..., c] == 0).all()) for c in range(3)) == [0, 0, 1]
    joints = drop_parts(x, DataConfig(joint_drop=1.0), rng)
    frames_hit = (joints == 0).any(axis=(1, 2, 3)).sum()
    joints_hit = (joints == 0).any(axis=(0, 1, 3)).sum()
    assert 16 <= frames_hit <= 32 and 4 <= joints_hit <= 12
    assert int((joints == 0).sum()) == frames_hit * joints_hit * 3
    assert drop_parts(x, DataConfig(), rng).all()


@pytest.fixture
def penn_like(tmp_path):
    """Two 2-person clips with visibility and image sizes, like Penn Action plus a second person."""
    layout = Layout("toy", ("a", "b", "c"), ((1, 0), (2, 1)), 2)
    rng = np.random.default_rng(1)
    with DatasetWriter(tmp_path / "ds", "toy", layout, 2, ["x", "y"], confidence=True,
                       extra_fields={"width": np.int32, "height": np.int32}) as writer:
        for i in range(2):
            frames = rng.uniform(0, 100, size=(6, 2, 3, 2)).astype(np.float32)
            visible = np.ones((6, 2, 3), np.float32)
            visible[2, 0, 1] = 0
            writer.add_clip(frames, i, f"clip{i}", confidence=visible, extra={"width": 200, "height": 100})
        writer.set_protocol("p", "", [0, 1])
    return open_dataset(tmp_path / "ds")


def test_invisible_joints_are_zeroed_or_kept(penn_like):
    raw = penn_like.clip(0)
    zeroed = ClipDataset(penn_like, [0], DataConfig(frames=0, person="first"), train=False, seed=0)[0][0].numpy()
    kept = ClipDataset(penn_like, [0], DataConfig(frames=0, person="first", invisible="keep"), train=False,
                       seed=0)[0][0].numpy()
    assert not zeroed[2, 1].any() and zeroed[2, 0].any()
    np.testing.assert_array_equal(kept, raw[:, 0])


def test_both_persons_side_by_side_with_bones_and_image_normalisation(penn_like):
    cfg = DataConfig(frames=0, person="both", representation="bone_concat", normalize="image", invisible="keep")
    assert model_input_shape(penn_like, cfg) == (2 * 4, 2)
    x = ClipDataset(penn_like, [1], cfg, train=False, seed=0)[0][0].numpy()
    raw = penn_like.clip(1) / np.array([200.0, 100.0]) * 2 - 1  # (T, M, J, C)
    assert x.shape == (6, 8, 2)
    np.testing.assert_allclose(x[:, :4], represent(raw[:, 0], "bone_concat", BONES), atol=1e-6)
    np.testing.assert_allclose(x[:, 4:], represent(raw[:, 1], "bone_concat", BONES), atol=1e-6)


def test_options_the_dataset_cannot_serve_are_user_errors(tiny_dataset):
    ds = open_dataset(tiny_dataset)  # synthetic: no image sizes
    with pytest.raises(UserError, match="data.normalize=image needs per-clip width and height"):
        ClipDataset(ds, [0], DataConfig(normalize="image"), train=False, seed=0)
    with pytest.raises(UserError, match="data.center_joint is 30"):
        ClipDataset(ds, [0], DataConfig(center_joint=30), train=False, seed=0)


def test_repeat_and_frozen_augmentation(tiny_dataset):
    ds = open_dataset(tiny_dataset)
    cfg = DataConfig(frames=8, rotate=0.5, repeat=3)
    fresh = ClipDataset(ds, [0, 1], cfg, train=True, seed=0)
    assert len(fresh) == 6 and len(ClipDataset(ds, [0, 1], cfg, train=False, seed=0)) == 2
    copies = [fresh[k][0] for k in (0, 2, 4)]  # three copies of clip 0, each augmented differently
    assert not np.allclose(copies[0], copies[1]) and not np.allclose(copies[1], copies[2])
    before = fresh[0][0]
    fresh.set_epoch(1)
    assert not np.allclose(fresh[0][0], before)  # a new epoch draws a new augmentation

    frozen = ClipDataset(ds, [0, 1], DataConfig(frames=8, rotate=0.5, repeat=3, frozen_augmentation=True),
                         train=True, seed=0)
    first = [frozen[k][0] for k in range(6)]
    frozen.set_epoch(7)
    assert all(np.array_equal(a, frozen[k][0]) for k, a in enumerate(first))
    assert not np.allclose(first[0], first[2])  # copies still differ from each other


def test_motion_streams_on_a_hand_made_clip():
    # Three frames of three joints in 2-D; joint 2 moves right by 1 then up by 2.
    x = np.array([[[0, 0], [1, 0], [1, 1]], [[0, 0], [1, 0], [2, 1]], [[0, 0], [1, 0], [2, 3]]], np.float32)
    joint_motion = represent(x, "joint_motion", BONES)
    np.testing.assert_array_equal(joint_motion[:, 2], [[1, 0], [0, 2], [0, 0]])  # the last frame has no next
    assert not joint_motion[:, :2].any()  # still joints do not move
    # Bone 1 (joint 2 - joint 1) turns from (0, 1) to (1, 1) to (1, 3).
    np.testing.assert_array_equal(represent(x, "bone_motion", BONES)[:, 1], [[1, 0], [0, 2], [0, 0]])
    assert output_shape("joint_motion", 3, 2, 2) == (3, 2) and output_shape("bone_motion", 3, 2, 3) == (2, 3)
    # With persons (T, P, J, C), motion runs along time only, each person on its own.
    two = np.stack([x, x + 5], axis=1)
    np.testing.assert_array_equal(represent(two, "joint_motion", BONES)[:, 1], joint_motion)


def test_motion_streams_through_the_pipeline_keep_each_clip_to_itself():
    from cascade_cli.data.pipeline import transform_clip

    rng = np.random.default_rng(0)
    clip = rng.normal(size=(7, 1, 3, 2)).astype(np.float32)  # (L, M, J, C)
    cfg = DataConfig(frames=0, center_joint=-1, normalize="none", representation="joint_motion")
    x = transform_clip(clip, None, cfg, BONES, None)  # (T, P*J, C), evaluation
    np.testing.assert_allclose(x[:-1], (clip[1:, 0] - clip[:-1, 0]), atol=1e-6)
    assert not x[-1].any() and x.shape == (7, 3, 2)


def test_shear_of_2d_clips_about_the_seen_joints():
    from cascade_cli.data.pipeline import augment

    x = np.array([[[[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 0.0]]]], np.float32)  # (T, P, J, C); joint 3 missing
    x[0, 0, 0] = [1.0, 1.0]
    cfg = DataConfig(shear=0.5)
    out = augment(x, cfg, np.random.default_rng(0))
    a, b = np.random.default_rng(0).uniform(-0.5, 0.5, 2)
    pivot = x[0, 0, :3].mean(axis=0)
    expected = (x[0, 0, :3] - pivot) @ np.array([[1, a], [b, 1]]).T + pivot
    np.testing.assert_allclose(out[0, 0, :3], expected, rtol=1e-6)
    assert not out[0, 0, 3].any()  # the missing joint stays missing
    three_d = np.ones((1, 1, 2, 3), np.float32)
    np.testing.assert_array_equal(augment(three_d, cfg, np.random.default_rng(0)), three_d)  # 2-D only
