"""Skeleton layouts: which joints a dataset has, in which order, and how they connect.

A layout travels inside every prepared dataset's manifest, so a dataset stays self-describing even
when its layout is not (or no longer) registered here. The registry only serves converters and the
synthetic generator, which need a layout by name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from cascade_cli.errors import UserError


@dataclass(frozen=True)
class Layout:
    name: str
    joint_names: tuple[str, ...]
    # 0-based (child, parent) pairs; the bone vector of a child is joint[child] - joint[parent].
    bones: tuple[tuple[int, int], ...]
    coords: int  # 2 (image) or 3 (camera space)

    def __post_init__(self):
        J = len(self.joint_names)
        if self.coords not in (2, 3):
            raise ValueError(f"layout {self.name}: coords must be 2 or 3, got {self.coords}")
        if len(set(self.joint_names)) != J:
            raise ValueError(f"layout {self.name}: joint names are not unique")
        for child, parent in self.bones:
            if not (0 <= child < J and 0 <= parent < J) or child == parent:
                raise ValueError(f"layout {self.name}: bone ({child}, {parent}) is not a pair of joints in 0..{J - 1}")

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def with_coords(self, coords: int) -> Layout:
        """The same joints with another coordinate count: image keypoint layouts (COCO, OpenPose) are
        also produced by 3-D lifters, and MediaPipe landmarks are often used without z."""
        return self if coords == self.coords else replace(self, coords=coords)

    def reordered(self, order: Sequence[int], name: str) -> Layout:
        """The joints in a new order, new joint k being old joint order[k]; bones follow their joints.
        Needed where a model was trained on a permuted joint order (N-UCLA's official checkpoints)."""
        if sorted(order) != list(range(self.num_joints)):
            raise ValueError(f"layout {self.name}: {list(order)} is not a permutation of 0..{self.num_joints - 1}")
        new_index = {old: new for new, old in enumerate(order)}
        return Layout(name, tuple(self.joint_names[j] for j in order),
                      tuple((new_index[c], new_index[p]) for c, p in self.bones), self.coords)

    def to_dict(self) -> dict:
        return {"name": self.name, "joint_names": list(self.joint_names),
                "bones": [list(bone) for bone in self.bones], "coords": self.coords}

    @classmethod
    def from_dict(cls, data: dict) -> Layout:
        return cls(name=str(data["name"]), joint_names=tuple(str(n) for n in data["joint_names"]),
                   bones=tuple((int(c), int(p)) for c, p in data["bones"]), coords=int(data["coords"]))


# Kinect v2 joints in NTU RGB+D order (reference data_formats.md §1.3). Bones are the 24 CTR-GCN graph
# edges (§1.4) made 0-based; their tree is rooted at SpineShoulder (20), and the hand tips hang off
# the thumbs rather than the hands, as in CTR-GCN.
NTU25 = Layout(
    name="ntu25",
    joint_names=(
        "SpineBase", "SpineMid", "Neck", "Head",
        "ShoulderLeft", "ElbowLeft", "WristLeft", "HandLeft",
        "ShoulderRight", "ElbowRight", "WristRight", "HandRight",
        "HipLeft", "KneeLeft", "AnkleLeft", "FootLeft",
        "HipRight", "KneeRight", "AnkleRight", "FootRight",
        "SpineShoulder", "HandTipLeft", "ThumbLeft", "HandTipRight", "ThumbRight",
    ),
    bones=(
        (0, 1), (1, 20), (2, 20), (3, 2), (4, 20), (5, 4), (6, 5), (7, 6), (8, 20), (9, 8), (10, 9),
        (11, 10), (12, 0), (13, 12), (14, 13), (15, 14), (16, 0), (17, 16), (18, 17), (19, 18),
        (21, 22), (22, 7), (23, 24), (24, 11),
    ),
    coords=3,
)

# Kinect v1 joints in N-UCLA order (data_formats.md §3.3); bones are the 19 CTR-GCN ucla graph edges
# made 0-based, a tree rooted at ShoulderCenter (2) like NTU25's.
KINECT_V1_20 = Layout(
    name="kinect_v1_20",
    joint_names=(
        "HipCenter", "Spine", "ShoulderCenter", "Head",
        "ShoulderLeft", "ElbowLeft", "WristLeft", "HandLeft",
        "ShoulderRight", "ElbowRight", "WristRight", "HandRight",
        "HipLeft", "KneeLeft", "AnkleLeft", "FootLeft",
        "HipRight", "KneeRight", "AnkleRight", "FootRight",
    ),
    bones=(
        (0, 1), (1, 2), (3, 2), (4, 2), (5, 4), (6, 5), (7, 6), (8, 2), (9, 8), (10, 9), (11, 10),
        (12, 0), (13, 12), (14, 13), (15, 14), (16, 0), (17, 16), (18, 17), (19, 18),
    ),
    coords=3,
)

# Penn Action's 13 joints (data_formats.md §2.2). The bones are CascadeFormer's 13 pairs (cascadeformer.md
# §B.10) so that bone features match its ablations; the shoulder-shoulder pair (2, 1) makes the graph
# a tree plus one cycle, rooted at the head.
PENN13 = Layout(
    name="penn13",
    joint_names=(
        "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
        "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    bones=((1, 0), (2, 0), (2, 1), (3, 1), (4, 2), (5, 3), (6, 4), (7, 1), (8, 2), (9, 7), (10, 8), (11, 9), (12, 10)),
    coords=2,
)

# The 17 COCO keypoints; bones are the 19 edges of the COCO keypoint skeleton, each child listed
# towards the nose (face) or the shoulders (body).
COCO17 = Layout(
    name="coco17",
    joint_names=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
        "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    bones=(
        (1, 0), (2, 0), (2, 1), (3, 1), (4, 2), (5, 3), (6, 4), (6, 5), (7, 5), (8, 6), (9, 7), (10, 8),
        (11, 5), (12, 6), (12, 11), (13, 11), (14, 12), (15, 13), (16, 14),
    ),
    coords=2,
)

# OpenPose BODY_25; bones are its 24 limb pairs, a tree rooted at the neck (1).
OPENPOSE_BODY25 = Layout(
    name="openpose25",
    joint_names=(
        "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip",
        "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar",
        "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel",
    ),
    bones=(
        (0, 1), (2, 1), (3, 2), (4, 3), (5, 1), (6, 5), (7, 6), (8, 1), (9, 8), (10, 9), (11, 10),
        (12, 8), (13, 12), (14, 13), (15, 0), (16, 0), (17, 15), (18, 16),
        (19, 14), (20, 19), (21, 14), (22, 11), (23, 22), (24, 11),
    ),
    coords=2,
)

# MediaPipe Pose's 33 landmarks (x, y, z); bones are its 35 pose connections. As in MediaPipe, the face
# (0-8), the mouth (9-10) and the body (11-32) are three separate components.
MEDIAPIPE_POSE33 = Layout(
    name="mediapipe33",
    joint_names=(
        "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
        "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
        "left_pinky", "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb",
        "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
        "left_heel", "right_heel", "left_foot_index", "right_foot_index",
    ),
    bones=(
        (1, 0), (2, 1), (3, 2), (7, 3), (4, 0), (5, 4), (6, 5), (8, 6), (10, 9),
        (12, 11), (13, 11), (15, 13), (17, 15), (19, 15), (21, 15), (19, 17),
        (14, 12), (16, 14), (18, 16), (20, 16), (22, 16), (20, 18),
        (23, 11), (24, 12), (24, 23), (25, 23), (26, 24), (27, 25), (28, 26),
        (29, 27), (30, 28), (31, 29), (32, 30), (31, 27), (32, 28),
    ),
    coords=3,
)

LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in
                              (NTU25, KINECT_V1_20, PENN13, COCO17, OPENPOSE_BODY25, MEDIAPIPE_POSE33)}


def get_layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise UserError(f"unknown skeleton layout '{name}'; known layouts: {', '.join(sorted(LAYOUTS))}")
    return LAYOUTS[name]
