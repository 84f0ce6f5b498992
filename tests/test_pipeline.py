import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from cascade_cli.config import DataConfig
from cascade_cli.data.format import DatasetWriter, open_dataset
from cascade_cli.data.pipeline import ClipDataset, center, collate_clips, resize, sample_frames, select_persons
from cascade_cli.data.splits import stratified_split
from cascade_cli.errors import UserError
from cascade_cli.layouts import Layout

TOY = Layout(name="toy4", joint_names=("a", "b", "c", "d"), bones=((1, 0), (2, 1), (3, 1)), coords=3)
LENGTHS = [40, 1, 7, 100]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four clips of lengths 40, 1, 7 and 100; clip 3 has a second, more active person."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "toy"
    with DatasetWriter(path, "toy", TOY, 2, ["x", "y"]) as writer:
        for i, T in enumerate(LENGTHS):
            frames = rng.normal(1.0, 0.1, size=(T, 2 if i == 3 else 1, 4, 3))
            if i == 3:
                frames[:, 1] += 3 * np.sin(np.arange(T))[:, None, None]
            writer.add_clip(frames, i % 2, f"clip{i}")
    return open_dataset(path)


# ----------------------------------------------------------------------------------------------
# Validation split


def test_stratified_split_takes_a_share_of_every_class():
    labels = np.array([0] * 20 + [1] * 10 + [2] * 3 + [3] * 1)
    indices = np.arange(len(labels))[::-1]  # order of the input must not matter
    train, val = stratified_split(labels, indices, 0.1, seed=1)
    np.testing.assert_array_equal(np.bincount(labels[val], minlength=4), [2, 1, 1, 0])
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    again = stratified_split(labels, np.arange(len(labels)), 0.1, seed=1)
    np.testing.assert_array_equal(again[1], val)
    assert any(not np.array_equal(stratified_split(labels, indices, 0.1, seed=s)[1], val) for s in range(2, 6))


def test_stratified_split_on_a_subset_and_zero_fraction():
    labels = np.repeat([0, 1], 10)
    subset = np.arange(0, 20, 2)  # 5 clips per class
    train, val = stratified_split(labels, subset, 0.4, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[val]), [2, 2])
    assert set(val) < set(subset) and set(train) | set(val) == set(subset)
    train, val = stratified_split(labels, subset, 0.0, seed=0)
    assert len(val) == 0 and val.dtype == np.int64
    np.testing.assert_array_equal(train, subset)


# ----------------------------------------------------------------------------------------------
# Single transforms


def test_person_selection_rules_disagree_where_they_should():
    T = 10
    clip = np.zeros((T, 3, 4, 3), np.float32)  # person 2 is absent
    clip[:, 0] = 5.0  # still but far from the origin: largest |coordinates|
    clip[:, 1] = 0.5 * np.sin(np.arange(T))[:, None, None]  # moving near the origin
    assert select_persons(clip, "abs_sum")[0, 0, 0, 0] == 5.0
    np.testing.assert_array_equal(select_persons(clip, "motion_variance"), clip[:, 1:2])
    np.testing.assert_array_equal(select_persons(clip, "first"), clip[:, 0:1])
    np.testing.assert_array_equal(select_persons(clip, "both"), clip)


def test_absent_people_never_win():
    clip = np.zeros((6, 2, 4, 3), np.float32)
    clip[:, 1] = 2.0  # the only person present does not move at all, and is second
    for rule in ("motion_variance", "abs_sum", "first"):
        np.testing.assert_array_equal(select_persons(clip, rule), clip[:, 1:2])


def test_motion_variance_ignores_frames_where_a_person_is_missing():
    clip = np.zeros((10, 2, 4, 3), np.float32)
    clip[:5, 0] = 4.0  # leaves halfway: variance over all frames would be huge, over its own is zero
    clip[:, 1] = 0.1 * np.arange(10)[:, None, None]  # drifts slowly
    np.testing.assert_array_equal(select_persons(clip, "motion_variance"), clip[:, 1:2])


def test_center_subtracts_the_joint_in_the_first_visible_frame():
    x = np.random.default_rng(0).normal(size=(5, 2, 4, 3)).astype(np.float32)
    x[0, 0] = 0  # first person not yet seen
    x[3, 1] = 0  # second person missing in one frame
    out = center(x, joint=2)
    np.testing.assert_allclose(out[1:, 0], x[1:, 0] - x[1, 0, 2])
    np.testing.assert_allclose(out[[0, 1, 2, 4], 1], x[[0, 1, 2, 4], 1] - x[1, 0, 2])  # same origin for both
    assert not out[0, 0].any() and not out[1, 0, 2].any() and not out[3, 1].any()


def test_resize_matches_torch_interpolate():
    for L, frames in ((37, 64), (100, 64), (64, 64), (1, 8)):
        x = np.random.default_rng(L).normal(size=(L, 4, 3)).astype(np.float32)
        # CTR-GCN's valid_crop_resize: (C*V, T) image, bilinear, align_corners=False.
        as_image = torch.from_numpy(x.reshape(L, -1).T.copy())[None, None]
        expected = F.interpolate(as_image, size=(12, frames), mode="bilinear", align_corners=False)[0, 0].T
        np.testing.assert_allclose(resize(x, frames), expected.reshape(frames, 4, 3).numpy(), atol=1e-5)


def test_evaluation_sampling():
    x = np.arange(100, dtype=np.float32)[:, None, None] * np.ones((1, 4, 3), np.float32)
    cropped = sample_frames(x, DataConfig(frames=76, eval_crop=0.75), rng=None)  # drops 12 frames at each end
    np.testing.assert_array_equal(cropped[:, 0, 0], np.arange(12, 88))
    resized = sample_frames(x, DataConfig(frames=38, eval_crop=0.75), rng=None)
    np.testing.assert_allclose(resized[:, 0, 0], np.arange(12, 88, 2) + 0.5)  # pairs of frames averaged
    picked = sample_frames(x, DataConfig(frames=7, sampling="indices"), rng=None)
    np.testing.assert_array_equal(picked[:, 0, 0], [0, 16, 33, 49, 66, 82, 99])


def test_training_crop_stays_within_the_clip_and_is_not_shorter_than_the_output():
    x = np.arange(100, dtype=np.float32)[:, None, None] * np.ones((1, 4, 3), np.float32)
    cfg = DataConfig(frames=64, crop_min=0.1)
    for seed in range(20):
        out = sample_frames(x, cfg, np.random.default_rng(seed))[:, 0, 0]
        # A window of at least 64 frames resized to 64 never skips more than ~1.6 frames per step.
        assert out.min() >= 0 and out.max() <= 99 and np.diff(out).max() <= 100 / 64 + 1e-4
    indices = sample_frames(x, DataConfig(frames=50, sampling="indices"), np.random.default_rng(0))[:, 0, 0]
    assert np.all(np.diff(indices) >= 0) and len(indices) == 50


# ----------------------------------------------------------------------------------------------
# ClipDataset and batching


def test_items_have_the_configured_shape(dataset):
    cfg = DataConfig(frames=16, center_joint=0, rotate=0.3, scale=0.2)
    for train in (True, False):
        items = ClipDataset(dataset, np.arange(4), cfg, train, seed=0)
        for k in range(4):
            x, label = items[k]
            assert x.shape == (16, 4, 3) and x.dtype == torch.float32 and label == k % 2
    x, _ = ClipDataset(dataset, [0], DataConfig(frames=0), train=True, seed=0)[0]
    assert x.shape == (40, 4, 3)  # frames=0 keeps the whole clip


def test_length_one_clips_work_everywhere(dataset):
    for sampling in ("resize", "indices"):
        for frames in (0, 8):
            for train in (True, False):
                cfg = DataConfig(frames=frames, sampling=sampling, center_joint=1, rotate=0.5, scale=0.3)
                x, _ = ClipDataset(dataset, [1], cfg, train, seed=3)[0]
                assert x.shape == (max(frames, 1), 4, 3) and torch.isfinite(x).all()
                assert torch.equal(x, x[:1].expand_as(x))  # one frame, repeated
                assert not x[:, 1].any()  # the centre joint sits at the origin


def test_train_transforms_depend_only_on_seed_epoch_and_clip(dataset):
    cfg = DataConfig(frames=16, rotate=0.3, scale=0.2)
    a = ClipDataset(dataset, [0, 3, 2], cfg, train=True, seed=7)
    b = ClipDataset(dataset, [3, 2, 0], cfg, train=True, seed=7)
    assert torch.equal(a[0][0], b[2][0]) and torch.equal(a[1][0], b[0][0])  # same clip, other position
    first = a[1][0]
    a.set_epoch(1)
    assert not torch.allclose(a[1][0], first)
    a.set_epoch(0)
    assert torch.equal(a[1][0], first)
    assert not torch.allclose(ClipDataset(dataset, [3], cfg, train=True, seed=8)[0][0], first)


def test_evaluation_is_deterministic_and_unaugmented(dataset):
    cfg = DataConfig(frames=16, center_joint=0, eval_crop=1.0, crop_min=1.0, rotate=0.4, scale=0.3)
    evaluation = ClipDataset(dataset, [3], cfg, train=False, seed=0)
    x = evaluation[0][0]
    evaluation.set_epoch(5)
    assert torch.equal(evaluation[0][0], x)
    expected = resize(center(select_persons(dataset.clip(3), "motion_variance"), 0), 16)[:, 0]
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-6)
    # Training sees the same frames (no crop at crop_min = 1), rotated and scaled about the centre joint:
    # distances between joints change by one common factor.
    trained = ClipDataset(dataset, [3], cfg, train=True, seed=0)[0][0]
    ratio = torch.linalg.norm(trained, dim=-1)[:, 1:] / torch.linalg.norm(x, dim=-1)[:, 1:]
    assert not torch.allclose(trained, x)
    assert torch.allclose(ratio, ratio[0, 0].expand_as(ratio), atol=1e-4) and 0.7 <= ratio[0, 0] <= 1.3


def test_center_joint_must_exist(dataset):
    with pytest.raises(UserError, match="data.center_joint"):
        ClipDataset(dataset, [0], DataConfig(center_joint=4), train=False, seed=0)


def test_worker_processes_give_the_same_batches(dataset):
    items = ClipDataset(dataset, np.arange(4), DataConfig(frames=8, rotate=0.3), train=True, seed=1)
    clone = pickle.loads(pickle.dumps(items))  # what a spawned worker receives: no frames copied
    assert clone.dataset._frames is None
    torch.testing.assert_close(clone[3][0], items[3][0])
    batches = [next(iter(DataLoader(items, batch_size=4, num_workers=workers, collate_fn=collate_clips)))
               for workers in (0, 2)]
    torch.testing.assert_close(batches[0].x, batches[1].x)


def test_collate_pads_with_zeros_and_reports_lengths():
    items = [(torch.ones(3, 4, 3), 1), (torch.full((1, 4, 3), 2.0), 0), (torch.ones(5, 4, 3), 4)]
    batch = collate_clips(items)
    assert batch.x.shape == (3, 5, 4, 3)
    assert batch.lengths.tolist() == [3, 1, 5] and batch.lengths.dtype == torch.long
    assert batch.labels.tolist() == [1, 0, 4] and batch.labels.dtype == torch.long
    assert batch.x[0, :3].eq(1).all() and not batch.x[0, 3:].any()
    assert batch.x[1, 0].eq(2).all() and not batch.x[1, 1:].any()
    x, lengths, labels = batch  # unpacks like a tuple
    assert x is batch.x and lengths is batch.lengths and labels is batch.labels
