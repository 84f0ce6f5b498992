"""Joint mappings between layouts: each target joint from the right source joints, sides kept, missing
joints and coordinates handled, and one clear error where no mapping exists."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cascade_cli.errors import UserError
from cascade_cli.layouts import COCO17, KINECT_V1_20, LAYOUTS, MEDIAPIPE_POSE33, NTU25, PENN13, Layout
from cascade_cli.layouts.mapping import MAPPABLE, JointMap, joint_map, sources_for

FACE = ("nose", "left_eye", "right_eye", "left_ear", "right_ear")


def _openpose_name(coco_name: str) -> str:
    """left_big_toe -> LBigToe, nose -> Nose: OpenPose's spelling of a COCO-style name."""
    words = coco_name.split("_")
    side = {"left": "L", "right": "R"}.get(words[0])
    return (side or "") + "".join(w.capitalize() for w in (words[1:] if side else words))


# (source, target) -> {target joint: expected source joints}; a joint not listed is the same-named one.
EXPECTED: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {
    **{(name, name): {} for name in LAYOUTS},
    ("coco17", "penn13"): {"head": FACE},
    ("mediapipe33", "penn13"): {"head": FACE},
    ("openpose25", "penn13"): {name: ((_openpose_name(name),) if name != "head" else tuple(map(_openpose_name, FACE)))
                               for name in PENN13.joint_names},
    ("openpose25", "coco17"): {name: (_openpose_name(name),) for name in COCO17.joint_names},
    ("mediapipe33", "coco17"): {},
    ("ntu25", "kinect_v1_20"): {"HipCenter": ("SpineBase",), "Spine": ("SpineMid",),
                                "ShoulderCenter": ("SpineShoulder",)},
}
PAIRS = sorted(EXPECTED)


def _side(name: str) -> str | None:
    """left/right from a joint name in any layout's style: left_wrist, mouth_left, LWrist, WristLeft."""
    for side, short in (("left", "L"), ("right", "R")):
        if re.search(rf"(^|_){side}(_|$)|{side.capitalize()}|^{short}[A-Z]", name):
            return side
    return None


def _marked_frames(layout: Layout, lead: tuple[int, ...] = ()) -> np.ndarray:
    """Source joint j at (j, 100 + j[, 200 + j])."""
    j = np.arange(layout.num_joints, dtype=np.float32)
    pose = np.stack([j + 100 * c for c in range(layout.coords)], axis=-1)
    return np.broadcast_to(pose, (*lead, *pose.shape)).copy()


def test_side_reader():
    assert [_side(n) for n in ("left_wrist", "mouth_left", "LWrist", "WristLeft", "RBigToe", "HipRight")] == \
        ["left", "left", "left", "left", "right", "right"]
    assert [_side(n) for n in ("head", "Nose", "Neck", "SpineShoulder", "HipCenter")] == [None] * 5


def test_mappable_lists_exactly_the_tested_pairs():
    assert {(s, t) for t, sources in MAPPABLE.items() for s in sources} == set(PAIRS)
    assert MAPPABLE["penn13"] == ("coco17", "mediapipe33", "openpose25", "penn13")
    assert MAPPABLE["ntu25"] == ("ntu25",)


@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_sides_are_kept(source, target):
    mapping = joint_map(source, LAYOUTS[target])
    source_names, target_names = LAYOUTS[source].joint_names, LAYOUTS[target].joint_names
    for name, joints in zip(target_names, mapping.sources):
        sides = [_side(source_names[j]) for j in joints]
        if _side(name):
            assert set(sides) == {_side(name)}, (name, [source_names[j] for j in joints])
        else:  # a midline joint: from midline joints or from left/right pairs, never lopsided
            assert sides.count("left") == sides.count("right"), (name, [source_names[j] for j in joints])


@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_each_joint_comes_from_the_named_source_joints(source, target):
    src, tgt = LAYOUTS[source], LAYOUTS[target]
    frames, confidence = joint_map(source, tgt).apply(_marked_frames(src))
    assert confidence is None and frames.shape == (tgt.num_joints, tgt.coords) and frames.dtype == np.float32
    index = {name: j for j, name in enumerate(src.joint_names)}
    for k, name in enumerate(tgt.joint_names):
        wanted = np.mean([index[n] for n in EXPECTED[source, target].get(name, (name,))])
        np.testing.assert_allclose(frames[k], [wanted + 100 * c for c in range(tgt.coords)], rtol=1e-6,
                                   err_msg=f"{source}->{target}: {name}")


def test_named_examples():
    frames, _ = joint_map("coco17", PENN13).apply(_marked_frames(COCO17))
    assert frames[PENN13.joint_names.index("left_wrist")].tolist() == [9, 109]  # coco17 left_wrist is 9
    assert frames[PENN13.joint_names.index("head")].tolist() == [2, 102]  # mean of nose, eyes, ears (0..4)
    frames, _ = joint_map("ntu25", KINECT_V1_20).apply(_marked_frames(NTU25))
    assert frames[KINECT_V1_20.joint_names.index("HipCenter")].tolist() == [0, 100, 200]  # SpineBase
    assert frames[KINECT_V1_20.joint_names.index("ShoulderCenter")].tolist() == [20, 120, 220]  # SpineShoulder
    identity = joint_map("ntu25", NTU25)
    assert identity.sources == tuple((j,) for j in range(25)) and identity.coords == 3


def test_reordered_target_maps_by_joint_names():
    order = np.random.default_rng(0).permutation(PENN13.num_joints)
    moved = PENN13.reordered(order, name="penn13_shuffled")
    pose = np.random.default_rng(1).normal(size=(6, COCO17.num_joints, 2)).astype(np.float32)
    score = np.random.default_rng(2).uniform(size=(6, COCO17.num_joints)).astype(np.float32)
    plain, plain_score = joint_map("coco17", PENN13).apply(pose, score)
    shuffled, shuffled_score = joint_map("coco17", moved).apply(pose, score)
    np.testing.assert_array_equal(shuffled, plain[:, order])
    np.testing.assert_array_equal(shuffled_score, plain_score[:, order])
    assert sources_for(moved) == MAPPABLE["penn13"]
    # the same layout, reordered: a permutation of the joints
    coco_order = np.random.default_rng(3).permutation(17)
    frames, _ = joint_map("coco17", COCO17.reordered(coco_order, name="coco17")).apply(pose)
    np.testing.assert_array_equal(frames, pose[:, coco_order])


def test_average_ignores_unseen_sources():
    mapping = joint_map("coco17", PENN13)
    frames = _marked_frames(COCO17)
    confidence = np.ones(17, dtype=np.float32)
    confidence[[0, 1, 2]] = 0.0  # nose and eyes unseen (the person turned away): the ears' mean
    confidence[3], confidence[4] = 0.4, 0.7
    confidence[COCO17.joint_names.index("left_knee")] = 0.0  # a copied joint stays copied, confidence and all
    joints, score = mapping.apply(frames, confidence)
    head, knee = PENN13.joint_names.index("head"), PENN13.joint_names.index("left_knee")
    np.testing.assert_allclose(joints[head], [3.5, 103.5])
    assert score[head] == pytest.approx(0.7)  # the best-seen source's confidence
    assert joints[knee].tolist() == [13, 113] and score[knee] == 0.0
    confidence[:5] = 0.0  # no face keypoint seen: no head
    joints, score = mapping.apply(frames, confidence)
    assert joints[head].tolist() == [0, 0] and score[head] == 0.0
    frames[0] = np.nan  # an unseen source's coordinates never leak in, even NaN
    confidence[[0, 3]] = [0.0, 0.5]
    joints, score = mapping.apply(frames, confidence)
    assert joints[head].tolist() == [3, 103] and score[head] == pytest.approx(0.5)


def test_mediapipe_xyz_to_penn_keeps_xy():
    pose = np.random.default_rng(0).normal(size=(33, 3)).astype(np.float32)
    frames, _ = joint_map("mediapipe33", PENN13).apply(pose)
    assert frames.shape == (13, 2)
    wrist = MEDIAPIPE_POSE33.joint_names.index("right_wrist")
    assert frames[PENN13.joint_names.index("right_wrist")].tolist() == pose[wrist, :2].tolist()
    # MediaPipe landmarks without z map the same
    flat, _ = joint_map("mediapipe33", PENN13).apply(pose[:, :2])
    np.testing.assert_array_equal(flat, frames)


def test_fewer_source_coords_are_refused():
    with pytest.raises(UserError, match="^no joint mapping from coco17 to coco17: coco17 has 2 coordinates .* needs 3; "
                                        "layouts that map to coco17: mediapipe33$"):
        joint_map("coco17", COCO17.with_coords(3))
    with pytest.raises(ValueError, match="3 coordinates"):
        JointMap("coco17", "coco17", tuple((j,) for j in range(17)), 3)
    # a 3-D target from a 3-D source is fine, z kept
    frames, _ = joint_map("mediapipe33", COCO17.with_coords(3)).apply(_marked_frames(MEDIAPIPE_POSE33))
    assert frames[0].tolist() == [0, 100, 200]


def test_missing_mapping_is_one_user_error():
    with pytest.raises(UserError) as error:
        joint_map("openpose25", NTU25)
    assert str(error.value) == "no joint mapping from openpose25 to ntu25; layouts that map to ntu25: ntu25"
    with pytest.raises(UserError, match="^no joint mapping from coco17 to mine; no layout maps to mine$"):
        joint_map("coco17", Layout("mine", ("a", "b"), ((1, 0),), 2))
    extra = Layout("penn13", (*PENN13.joint_names, "neck"), PENN13.bones, 2)
    with pytest.raises(UserError) as error:
        joint_map("coco17", extra)
    assert str(error.value) == ("no joint mapping from coco17 to penn13 (nothing in coco17 stands for its joint "
                                "'neck'); no layout maps to penn13")
    with pytest.raises(UserError, match="unknown source layout 'h36m17'; built-in layouts: coco17, "):
        joint_map("h36m17", PENN13)


def test_batches():
    mapping = joint_map("openpose25", PENN13)
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(7, 2, 25, 2)).astype(np.float32)  # (T, M, J, C)
    confidence = (rng.uniform(size=(7, 2, 25)) * (rng.uniform(size=(7, 2, 25)) > 0.3)).astype(np.float32)
    joints, score = mapping.apply(frames, confidence)
    assert joints.shape == (7, 2, 13, 2) and score.shape == (7, 2, 13)
    assert joints.dtype == score.dtype == np.float32
    for t in range(7):
        for m in range(2):
            one, one_score = mapping.apply(frames[t, m], confidence[t, m])
            np.testing.assert_array_equal(joints[t, m], one)
            np.testing.assert_array_equal(score[t, m], one_score)
    with pytest.raises(ValueError, match="expected"):
        mapping.apply(frames[..., :17, :])  # COCO frames through an OpenPose mapping
