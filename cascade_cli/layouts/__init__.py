"""Skeleton layouts: which joints a dataset has, in which order, and how they connect.

A layout travels inside every prepared dataset's manifest, so a dataset stays self-describing even
when its layout is not (or no longer) registered here. The built-in layouts are YAML files beside
this module (name, coords, joint_names, bones), in the form a layout's to_dict writes; converters
and the synthetic generator take them by name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import resources
from typing import Sequence

import yaml

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


def _builtin(name: str) -> Layout:
    """A layout shipped as cascade_cli/layouts/<name>.yaml (the files say where joints and bones come from)."""
    with resources.as_file(resources.files("cascade_cli.layouts") / f"{name}.yaml") as path:
        return Layout.from_dict(yaml.safe_load(path.read_text()))


NTU25 = _builtin("ntu25")  # Kinect v2, NTU RGB+D order
KINECT_V1_20 = _builtin("kinect_v1_20")  # Kinect v1, N-UCLA order
PENN13 = _builtin("penn13")
COCO17 = _builtin("coco17")
OPENPOSE_BODY25 = _builtin("openpose25")
MEDIAPIPE_POSE33 = _builtin("mediapipe33")

LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in
                              (NTU25, KINECT_V1_20, PENN13, COCO17, OPENPOSE_BODY25, MEDIAPIPE_POSE33)}


def get_layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise UserError(f"unknown skeleton layout '{name}'; known layouts: {', '.join(sorted(LAYOUTS))}")
    return LAYOUTS[name]
