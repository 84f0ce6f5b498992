"""Joint mappings between skeleton layouts: a model trained on one layout reading another estimator's output.

A checkpoint knows only its own layout (Penn Action's 13 joints, Kinect v1's 20, ...), while a live pose
stream comes from whatever estimator runs: YOLO-pose (COCO-17), OpenPose BODY_25, MediaPipe Pose (33) or a
Kinect v2 (NTU-25). A JointMap rebuilds the checkpoint's joints from the estimator's, each target joint
copied from one source joint or the mean of several, so that, say, a Penn-13 model can classify COCO-17
keypoints. Mappings are written by joint name and resolved against the target layout's joint names, so
a checkpoint whose layout reorders the joints still gets each joint where it expects it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cascade_cli.errors import UserError
from cascade_cli.layouts import LAYOUTS, Layout

# Penn Action marks a single head point, near the middle of the head. The mean of the face keypoints
# that were seen lands there whether the person faces the camera (nose and eyes in front, ears to the
# sides) or turns away (ears only); the nose alone sits on the front of the face and vanishes from behind.
_FACE = ("nose", "left_eye", "right_eye", "left_ear", "right_ear")

# The COCO joints under their OpenPose BODY_25 names.
_OPENPOSE_AS_COCO = {
    "nose": ("Nose",), "left_eye": ("LEye",), "right_eye": ("REye",), "left_ear": ("LEar",),
    "right_ear": ("REar",), "left_shoulder": ("LShoulder",), "right_shoulder": ("RShoulder",),
    "left_elbow": ("LElbow",), "right_elbow": ("RElbow",), "left_wrist": ("LWrist",), "right_wrist": ("RWrist",),
    "left_hip": ("LHip",), "right_hip": ("RHip",), "left_knee": ("LKnee",), "right_knee": ("RKnee",),
    "left_ankle": ("LAnkle",), "right_ankle": ("RAnkle",),
}

# (source layout, target layout) -> {target joint: the source joints it is built from}. A target joint
# left out is the source joint of the same name; each layout maps to itself by name alone.
_TABLES: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {
    ("coco17", "penn13"): {"head": _FACE},
    ("mediapipe33", "penn13"): {"head": _FACE},  # MediaPipe's left_eye/right_eye are the eye centres
    ("openpose25", "penn13"): {**_OPENPOSE_AS_COCO, "head": ("Nose", "LEye", "REye", "LEar", "REar")},
    ("openpose25", "coco17"): _OPENPOSE_AS_COCO,
    ("mediapipe33", "coco17"): {},  # MediaPipe names the 17 COCO keypoints as COCO does
    # Kinect v2 split v1's spine into SpineShoulder and a Neck above it; v1's ShoulderCenter, the joint
    # the shoulders and head hang from, is v2's SpineShoulder. Hand tips and thumbs have no v1 joint.
    ("ntu25", "kinect_v1_20"): {"HipCenter": ("SpineBase",), "Spine": ("SpineMid",),
                                "ShoulderCenter": ("SpineShoulder",)},
}


@dataclass(frozen=True)
class JointMap:
    """How to build a target layout's joints from a built-in source layout's.

    sources[k] lists the source joints target joint k is built from: one is copied as it is (its
    confidence too, even 0); several give the mean of those with confidence > 0 (of all of them without
    confidence), with the highest of their confidences, a joint being as well seen as its best-seen part;
    none of them seen gives coordinates 0 and confidence 0. Coordinates beyond `coords` (MediaPipe's z
    for a 2-D target) are dropped.
    """

    source: str  # a built-in layout name
    target: str
    sources: tuple[tuple[int, ...], ...]
    coords: int  # the target's coordinate count
    # (J_tgt, K) source indices, each row padded with its first index; which entries are real; and
    # which target joints are single-source copies.
    _index: np.ndarray = field(init=False, repr=False, compare=False)
    _real: np.ndarray = field(init=False, repr=False, compare=False)
    _copied: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.source not in LAYOUTS:
            raise ValueError(f"joint map: '{self.source}' is not a built-in layout")
        layout = LAYOUTS[self.source]
        if not 0 < self.coords <= layout.coords:
            raise ValueError(f"joint map {self.source}->{self.target}: {self.coords} coordinates, but "
                             f"{self.source} has {layout.coords}")
        if not self.sources or not all(self.sources) or \
                not all(0 <= j < layout.num_joints for joints in self.sources for j in joints):
            raise ValueError(f"joint map {self.source}->{self.target}: every target joint needs source "
                             f"joints in 0..{layout.num_joints - 1}")
        width = max(map(len, self.sources))
        counts = np.array([len(joints) for joints in self.sources])
        object.__setattr__(self, "_index", np.array([joints + joints[:1] * (width - len(joints))
                                                     for joints in self.sources]))
        object.__setattr__(self, "_real", np.arange(width) < counts[:, None])
        object.__setattr__(self, "_copied", (counts == 1)[:, None])

    def apply(self, frames: np.ndarray, confidence: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """(..., J_src, C_src) frames and (..., J_src) confidence (or None) -> (..., J_tgt, coords) frames
        and (..., J_tgt) confidence (or None), float32."""
        frames = np.asarray(frames, dtype=np.float32)
        num_joints = LAYOUTS[self.source].num_joints
        if frames.ndim < 2 or frames.shape[-2] != num_joints or frames.shape[-1] < self.coords:
            raise ValueError(f"joint map {self.source}->{self.target}: frames of shape {frames.shape}, expected "
                             f"(..., {num_joints}, >={self.coords})")
        gathered = frames[..., self._index, :self.coords]  # (..., J_tgt, K, coords)
        if confidence is None:
            present, scores = self._real, None
        else:
            confidence = np.asarray(confidence, dtype=np.float32)
            if confidence.shape != frames.shape[:-1]:
                raise ValueError(f"joint map {self.source}->{self.target}: confidence of shape {confidence.shape} "
                                 f"for frames of shape {frames.shape}")
            scores = confidence[..., self._index]  # (..., J_tgt, K)
            present = self._real & ((scores > 0) | self._copied)
        count = present.sum(axis=-1, keepdims=True, dtype=np.float32)
        joints = np.where(present[..., None], gathered, 0).sum(axis=-2) / np.maximum(count, 1)
        if scores is None:
            return joints, None
        return joints, np.max(scores, axis=-1, where=present, initial=0.0)


def _builtin_kind(target: Layout) -> str | None:
    """The built-in layout a target is: the one of its name, else the one with its joint names (a
    checkpoint layout reordered under a new name)."""
    if target.name in LAYOUTS:
        return target.name
    names = set(target.joint_names)
    return next((name for name, layout in LAYOUTS.items() if set(layout.joint_names) == names), None)


def _joint_sources(source: Layout, target: Layout) -> list[tuple[int, ...] | None] | None:
    """For each target joint, the source joints it is built from (None for a joint none stands for);
    None when no mapping from the source's layout to the target's is defined."""
    kind = _builtin_kind(target)
    table = {} if kind == source.name else _TABLES.get((source.name, kind))
    if table is None:
        return None
    index = {name: j for j, name in enumerate(source.joint_names)}
    sources = [table.get(name, (name,)) for name in target.joint_names]
    return [tuple(index[n] for n in names) if all(n in index for n in names) else None for names in sources]


def sources_for(target: Layout) -> tuple[str, ...]:
    """The built-in layouts that map to a target layout, sorted: a mapping for its every joint and at
    least its coordinates."""
    return tuple(sorted(name for name, source in LAYOUTS.items() if source.coords >= target.coords
                        and (joints := _joint_sources(source, target)) is not None and None not in joints))


# Target layout name -> the layouts that map to it, for --help texts and messages.
MAPPABLE: dict[str, tuple[str, ...]] = {name: sources_for(layout) for name, layout in LAYOUTS.items()}


def joint_map(source: str, target: Layout) -> JointMap:
    """The mapping from a built-in layout's joints (an estimator's output) to a target layout's (a
    checkpoint's); a UserError, one line, where there is none."""
    if source not in LAYOUTS:
        raise UserError(f"unknown source layout '{source}'; built-in layouts: {', '.join(sorted(LAYOUTS))}")
    layout = LAYOUTS[source]
    usable = sources_for(target)
    also = f"layouts that map to {target.name}: {', '.join(usable)}" if usable else f"no layout maps to {target.name}"
    joints = _joint_sources(layout, target)
    if joints is None:
        raise UserError(f"no joint mapping from {source} to {target.name}; {also}")
    if None in joints:
        missing = target.joint_names[joints.index(None)]
        raise UserError(f"no joint mapping from {source} to {target.name} (nothing in {source} stands for its "
                        f"joint '{missing}'); {also}")
    if layout.coords < target.coords:
        raise UserError(f"no joint mapping from {source} to {target.name}: {source} has {layout.coords} coordinates "
                        f"per joint, the target {target.name} needs {target.coords}; {also}")
    return JointMap(source, target.name, tuple(joints), target.coords)
