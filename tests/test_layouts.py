"""The registered skeleton layouts: sizes, valid and connected bone graphs, coordinate and joint changes."""

from __future__ import annotations

import numpy as np
import pytest

from cascade_cli.errors import UserError
from cascade_cli.layouts import KINECT_V1_20, LAYOUTS, PENN13, Layout, get_layout

EXPECTED = {"ntu25": (25, 3), "kinect_v1_20": (20, 3), "penn13": (13, 2), "coco17": (17, 2),
            "openpose25": (25, 2), "mediapipe33": (33, 3)}


def _components(layout: Layout) -> list[set[int]]:
    parent = list(range(layout.num_joints))

    def root(j: int) -> int:
        while parent[j] != j:
            j = parent[j]
        return j

    for a, b in layout.bones:
        parent[root(a)] = root(b)
    groups: dict[int, set[int]] = {}
    for j in range(layout.num_joints):
        groups.setdefault(root(j), set()).add(j)
    return sorted(groups.values(), key=min)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registered_layouts(name):
    layout = get_layout(name)
    assert layout.name == name and (layout.num_joints, layout.coords) == EXPECTED[name]
    assert Layout.from_dict(layout.to_dict()) == layout
    assert len({frozenset(bone) for bone in layout.bones}) == len(layout.bones)  # no bone twice
    components = _components(layout)
    if name == "mediapipe33":  # MediaPipe's own connections leave face, mouth and body apart
        assert components == [set(range(9)), {9, 10}, set(range(11, 33))]
    else:
        assert components == [set(range(layout.num_joints))]


def test_registry_is_complete():
    assert set(LAYOUTS) == set(EXPECTED)
    with pytest.raises(UserError, match="known layouts: coco17, kinect_v1_20, mediapipe33, ntu25, openpose25, penn13"):
        get_layout("h36m17")


def test_reference_bones():
    # cascadeformer.md §B.10 and data_formats.md §3.3 (CTR-GCN ucla edges, 1-based there).
    assert PENN13.bones == ((1, 0), (2, 0), (2, 1), (3, 1), (4, 2), (5, 3), (6, 4), (7, 1), (8, 2), (9, 7), (10, 8),
                            (11, 9), (12, 10))
    ctr = [(1, 2), (2, 3), (4, 3), (5, 3), (6, 5), (7, 6), (8, 7), (9, 3), (10, 9), (11, 10), (12, 11), (13, 1),
           (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19)]
    assert KINECT_V1_20.bones == tuple((a - 1, b - 1) for a, b in ctr)
    assert get_layout("coco17").joint_names[0] == "nose" and get_layout("openpose25").joint_names[8] == "MidHip"


def test_with_coords_and_reordered():
    coco = get_layout("coco17")
    lifted = coco.with_coords(3)
    assert (lifted.joint_names, lifted.bones, lifted.coords) == (coco.joint_names, coco.bones, 3)
    assert coco.with_coords(2) is coco
    with pytest.raises(ValueError):
        coco.with_coords(4)

    order = np.random.default_rng(0).permutation(20)
    moved = KINECT_V1_20.reordered(order, name="shuffled")
    pose = np.random.default_rng(1).normal(size=(20, 3))
    bones = {(KINECT_V1_20.joint_names[c], KINECT_V1_20.joint_names[p]): tuple(pose[c] - pose[p])
             for c, p in KINECT_V1_20.bones}
    moved_pose = pose[order]
    assert bones == {(moved.joint_names[c], moved.joint_names[p]): tuple(moved_pose[c] - moved_pose[p])
                     for c, p in moved.bones}
    with pytest.raises(ValueError, match="permutation"):
        KINECT_V1_20.reordered([0, 0, *range(2, 20)], name="bad")
