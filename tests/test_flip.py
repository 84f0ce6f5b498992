"""Mirror augmentation and test-time flips: left and right joints swap by name, for every layout."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from cascade_cli import lifecycle
from cascade_cli.config import DataConfig
from cascade_cli.data.format import open_dataset
from cascade_cli.data.pipeline import ClipDataset, mirror, mirror_order
from cascade_cli.errors import UserError
from cascade_cli.inference import load_classifier, score_indices
from cascade_cli.layouts import LAYOUTS, Layout
from tests.conftest import TINY

SWAPPED = {"ntu25": 20, "kinect_v1_20": 16, "penn13": 12, "coco17": 16, "openpose25": 22, "mediapipe33": 32}


def _side(name: str) -> str:
    lowered = name.lower()
    if "left" in lowered or (name[0] == "L" and name[1:2].isupper()):
        return "left"
    if "right" in lowered or (name[0] == "R" and name[1:2].isupper()):
        return "right"
    return "middle"


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_the_mirror_swaps_left_and_right_joints_of_every_layout(name):
    layout = LAYOUTS[name]
    order = layout.mirrored()
    assert sorted(order) == list(range(layout.num_joints))  # a permutation
    assert all(order[order[j]] == j for j in range(layout.num_joints))  # mirroring twice changes nothing
    assert sum(order[j] != j for j in range(layout.num_joints)) == SWAPPED[name]
    for j, k in enumerate(order):
        mine, theirs = layout.joint_names[j], layout.joint_names[k]
        flipped = {"left": "right", "right": "left", "middle": "middle"}[_side(mine)]
        assert _side(theirs) == flipped, (mine, theirs)
        # The same body part on the other side: the names differ only in the side word.
        strip = mine.lower().replace("left", "").replace("right", "")
        assert strip == theirs.lower().replace("left", "").replace("right", "") or mine[1:] == theirs[1:]


def test_mirroring_a_clip_reflects_x_keeps_missing_joints_and_swaps_sides():
    layout = LAYOUTS["penn13"]
    rng = np.random.default_rng(0)
    clip = rng.uniform(100, 200, size=(4, 1, 13, 2)).astype(np.float32)
    clip[1, 0, 5] = 0.0  # left wrist missing in frame 1
    out = mirror(clip, layout.mirrored())
    seen = (clip != 0).any(-1)
    centre = clip[..., 0][seen].mean()
    right_wrist, left_wrist = layout.joint_names.index("right_wrist"), layout.joint_names.index("left_wrist")
    np.testing.assert_allclose(out[0, 0, right_wrist], [2 * centre - clip[0, 0, left_wrist, 0], clip[0, 0, left_wrist, 1]],
                               rtol=1e-6)
    assert not out[1, 0, right_wrist].any()  # the missing joint is missing on its new side, not reflected
    np.testing.assert_allclose(mirror(out, layout.mirrored()), clip, rtol=1e-6)  # twice: the clip itself


def test_a_layout_without_sides_cannot_be_flipped():
    plain = Layout("blobs", ("a", "b", "c"), ((1, 0), (2, 1)), 2)
    assert plain.mirrored() == ()
    with pytest.raises(UserError, match="layout blobs of x.yaml has no joint names that say left or right"):
        mirror_order(plain, DataConfig(flip=0.5), "x.yaml")
    assert mirror_order(plain, DataConfig(), "x.yaml") == ()  # without flipping, nothing is asked of it


def test_training_flips_with_its_probability_and_evaluation_adds_mirrored_views(tiny_dataset):
    from cascade_cli.data.pipeline import transform_clip

    ds = open_dataset(tiny_dataset)
    base = DataConfig(frames=16, center_joint=1, scale=0.2)
    train = ds.split_indices("xsub", "train")
    order, bones = ds.layout.mirrored(), np.asarray(ds.layout.bones)
    always = ClipDataset(ds, train, replace(base, flip=1.0), train=True, seed=0)
    for k in range(4):  # the very crop and scale of the clip, drawn from its own stream, on its mirror
        i = int(train[k])
        rng = np.random.default_rng([0, 0, 0, i])
        expected = transform_clip(ds.clip(i), None, base, bones, rng, mirror_joints=order, flipped=True)
        np.testing.assert_array_equal(always[k][0].numpy(), expected)
    sometimes = ClipDataset(ds, train, replace(base, flip=0.5), train=True, seed=0)
    never = ClipDataset(ds, train, base, train=True, seed=0)
    same = [np.array_equal(sometimes[k][0], never[k][0]) for k in range(len(train))]
    assert 0.25 * len(train) < sum(same) < 0.75 * len(train)  # about half the clips are mirrored
    plain = ClipDataset(ds, train[:4], base, train=False, seed=0)
    with_mirrors = ClipDataset(ds, train[:4], replace(base, eval_flip=True), train=False, seed=0)
    assert len(with_mirrors) == 2 * len(plain)
    for k in range(4):  # each clip's plain view, then its mirror
        np.testing.assert_array_equal(with_mirrors[2 * k][0], plain[k][0])
        np.testing.assert_array_equal(with_mirrors[2 * k + 1][0], with_mirrors.transform(int(train[k]), None, flipped=True))
        assert not np.allclose(with_mirrors[2 * k + 1][0], plain[k][0])


def test_test_time_flip_averages_each_clip_with_its_mirror(tiny_dataset, tmp_path):
    lifecycle.pretrain(tmp_path / "pre", data=tiny_dataset, overrides=[*TINY, "data.flip=0.5"])
    lifecycle.finetune(tmp_path / "ft", pretrained=tmp_path / "pre", overrides=["data.eval_flip=true"])
    flipping = load_classifier(tmp_path / "ft")
    assert flipping.config.data.flip == 0.5 and flipping.config.data.eval_flip
    ds = open_dataset(tiny_dataset)
    test = ds.split_indices("xsub", "test")
    both = score_indices(flipping, ds, test)
    flipping.config.data = replace(flipping.config.data, eval_flip=False)
    plain = score_indices(flipping, ds, test)
    mirrored = ClipDataset(ds, test, replace(flipping.config.data, eval_flip=True), train=False, seed=0)
    with torch.no_grad():
        mirror_logits = np.stack([flipping.model(mirrored[2 * k + 1][0][None]).numpy()[0] for k in range(len(test))])
    np.testing.assert_allclose(both.logits, (plain.logits + mirror_logits) / 2, atol=1e-5)
    assert len(both.labels) == len(test)
    # Raw files through `predict` get the same two views.
    from cascade_cli.predict import predict

    flipping.config.data = replace(flipping.config.data, eval_flip=True)
    np.savez(tmp_path / "clip.npz", data=ds.clip(int(test[0]))[None])
    file = predict(tmp_path / "ft", [tmp_path / "clip.npz"])[0]
    np.testing.assert_allclose(file["logits"], both.logits[0], atol=1e-4)
