"""Skeleton layouts: which joints a dataset has, in which order, and how they connect.

A layout travels inside every prepared dataset's manifest, so a dataset stays self-describing even
when its layout is not (or no longer) registered here. The built-in layouts are YAML files beside
this module (name, coords, joint_names, bones), in the form a layout's to_dict writes; converters
and the synthetic generator take them by name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Sequence

import yaml

from cascade_cli.errors import UserError, read_yaml_mapping


@dataclass(frozen=True)
class Layout:
    name: str
    joint_names: tuple[str, ...]
    # 0-based (child, parent) pairs; the bone vector of a child is joint[child] - joint[parent].
    bones: tuple[tuple[int, int], ...]
    coords: int  # 2 (image) or 3 (camera space)
    # The joint a skeleton is anchored at (e.g. the hip centre), which data.center_joint=-2 centres on;
    # it lets a recipe centre skeletons whatever their joint order. None: the layout names none.
    center: int | None = None

    def __post_init__(self):
        J = len(self.joint_names)
        if self.coords not in (2, 3):
            raise ValueError(f"layout {self.name}: coords must be 2 or 3, got {self.coords}")
        if len(set(self.joint_names)) != J:
            raise ValueError(f"layout {self.name}: joint names are not unique")
        for child, parent in self.bones:
            if not (0 <= child < J and 0 <= parent < J) or child == parent:
                raise ValueError(f"layout {self.name}: bone ({child}, {parent}) is not a pair of joints in 0..{J - 1}")
        if self.center is not None and not 0 <= self.center < J:
            raise ValueError(f"layout {self.name}: centre joint {self.center} is not in 0..{J - 1}")

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
                      tuple((new_index[c], new_index[p]) for c, p in self.bones), self.coords,
                      None if self.center is None else new_index[self.center])

    def mirrored(self) -> tuple[int, ...]:
        """Joint k of the mirror image is joint mirrored()[k]: left and right joints swap, by their names
        (left_*/right_*, L*/R*, *_left/*_right, *Left/*Right); the others stay. Empty when no joint
        name says left or right, as a mirror of such a layout cannot be told."""
        index = {name: j for j, name in enumerate(self.joint_names)}
        order, paired = list(range(self.num_joints)), False
        for j, name in enumerate(self.joint_names):
            other = _other_side(name)
            if other is not None and other in index:
                order[j], paired = index[other], True
        return tuple(order) if paired else ()

    def to_dict(self) -> dict:
        data = {"name": self.name, "joint_names": list(self.joint_names),
                "bones": [list(bone) for bone in self.bones], "coords": self.coords}
        return data if self.center is None else {**data, "center": self.center}

    @classmethod
    def from_dict(cls, data: dict) -> Layout:
        center = data.get("center")
        return cls(name=str(data["name"]), joint_names=tuple(str(n) for n in data["joint_names"]),
                   bones=tuple((int(c), int(p)) for c, p in data["bones"]), coords=int(data["coords"]),
                   center=None if center is None else int(center))


_SIDES = (("left_", "right_", "prefix"), ("Left", "Right", "prefix"), ("L", "R", "prefix"),
          ("_left", "_right", "suffix"), ("Left", "Right", "suffix"))


def _other_side(name: str) -> str | None:
    """The name of the joint on the other side of the body, e.g. LShoulder -> RShoulder; None if the
    name says no side."""
    for left, right, where in _SIDES:
        for mine, theirs in ((left, right), (right, left)):
            if where == "prefix" and name.startswith(mine) and len(name) > len(mine):
                rest = name[len(mine):]
                if len(mine) > 1 or rest[0].isupper():  # L/R alone only before a capital: LShoulder, not Leg
                    return theirs + rest
            if where == "suffix" and name.endswith(mine) and len(name) > len(mine):
                return name[:-len(mine)] + theirs
    return None


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
    """A built-in layout by name, or a layout file (see load_layout) by its path."""
    if name in LAYOUTS:
        return LAYOUTS[name]
    if name.endswith((".yaml", ".yml")):
        return load_layout(Path(name))
    raise UserError(f"unknown skeleton layout '{name}'; known layouts: {', '.join(sorted(LAYOUTS))}; or give the "
                    "path of a layout YAML file (see `cascade layouts show ntu25 --yaml`)")


LAYOUT_KEYS = ("name", "coords", "joint_names", "bones", "center")


def load_layout(path: Path) -> Layout:
    """A layout a user describes in YAML: joint_names (in the order of the data), coords (2 or 3),
    bones as [child, parent] pairs of joint names or 0-based indices, an optional centre joint (name
    or index) and an optional name (default: the file's stem). Every mistake is one line naming the
    file and the key."""
    data = read_yaml_mapping(path, f"a layout: a mapping with the keys {', '.join(LAYOUT_KEYS)}")
    if unknown := [key for key in data if key not in LAYOUT_KEYS]:
        raise UserError(f"{path}: unknown key '{unknown[0]}'; a layout has {', '.join(LAYOUT_KEYS)}")
    for key in ("coords", "joint_names", "bones"):
        if key not in data:
            raise UserError(f"{path}: missing key '{key}'")
    names = data["joint_names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise UserError(f"{path}: 'joint_names' must be a list of joint names, in the order of the data")
    if duplicate := next((n for i, n in enumerate(names) if n in names[:i]), None):
        raise UserError(f"{path}: joint_names: '{duplicate}' appears twice")
    if data["coords"] not in (2, 3) or isinstance(data["coords"], bool):
        raise UserError(f"{path}: coords: {data['coords']!r}; use 2 (image) or 3 (camera space)")

    def joint(value, where: str) -> int:
        if isinstance(value, str):
            if value not in names:
                raise UserError(f"{path}: {where}: '{value}' is not one of the joint_names")
            return names.index(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value < len(names):
                raise UserError(f"{path}: {where}: joint index {value} is outside 0..{len(names) - 1}")
            return value
        raise UserError(f"{path}: {where}: {value!r} is neither a joint name nor a joint index")

    bones = data["bones"] or []
    if not isinstance(bones, list):
        raise UserError(f"{path}: 'bones' must be a list of [child, parent] pairs")
    pairs = []
    for i, bone in enumerate(bones):
        if not isinstance(bone, list) or len(bone) != 2:
            raise UserError(f"{path}: bones[{i}]: {bone!r} is not a [child, parent] pair")
        child, parent = joint(bone[0], f"bones[{i}]"), joint(bone[1], f"bones[{i}]")
        if child == parent:
            raise UserError(f"{path}: bones[{i}]: joint '{names[child]}' is joined to itself")
        pairs.append((child, parent))
    center = None if data.get("center") is None else joint(data["center"], "center")
    return Layout(str(data.get("name") or path.stem), tuple(names), tuple(pairs), int(data["coords"]), center)


def layout_yaml(layout: Layout) -> str:
    """A layout in the file format load_layout reads, bones by joint name: a template to edit."""
    names = layout.joint_names
    data = {"name": layout.name, "coords": layout.coords, "joint_names": list(names),
            "bones": [[names[c], names[p]] for c, p in layout.bones]}
    if layout.center is not None:
        data["center"] = names[layout.center]
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
    return ("# joint_names: in the order of the data; bones: [child, parent] pairs, by name or 0-based index;\n"
            "# center (optional): the joint data.center_joint=-2 centres on\n" + text)
