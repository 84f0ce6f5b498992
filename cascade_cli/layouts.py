"""Skeleton layouts: which joints a dataset has, in which order, and how they connect.

A layout travels inside every prepared dataset's manifest, so a dataset stays self-describing even
when its layout is not (or no longer) registered here. The registry only serves converters and the
synthetic generator, which need a layout by name.
"""

from __future__ import annotations

from dataclasses import dataclass

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

LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (NTU25,)}


def get_layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise UserError(f"unknown skeleton layout '{name}'; known layouts: {', '.join(sorted(LAYOUTS))}")
    return LAYOUTS[name]
