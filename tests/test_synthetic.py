import numpy as np
import pytest
import yaml

from cascade_cli.data.format import open_dataset
from cascade_cli.data.synthetic import DEFAULT_CLIPS_PER_CLASS, make_synthetic
from cascade_cli.layouts import NTU25


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return open_dataset(make_synthetic(tmp_path_factory.mktemp("data") / "synthetic", clips_per_class=10))


def test_same_seed_gives_identical_bytes_and_other_seeds_differ(tmp_path):
    first = make_synthetic(tmp_path / "a", clips_per_class=3, seed=5)
    second = make_synthetic(tmp_path / "b", clips_per_class=3, seed=5)
    for file in ("dataset.yaml", "frames.f32", "clips.npz"):
        assert (first / file).read_bytes() == (second / file).read_bytes(), file
    other = make_synthetic(tmp_path / "c", clips_per_class=3, seed=6)
    checksum = lambda path: yaml.safe_load((path / "dataset.yaml").read_text())["arrays"]["frames"]["sha256"]
    assert checksum(first) != checksum(other)


def test_shape_of_the_dataset(synthetic):
    assert synthetic.num_classes >= 8 and synthetic.num_clips == 10 * synthetic.num_classes
    assert synthetic.layout == NTU25 and synthetic.persons == 2
    np.testing.assert_array_equal(np.bincount(synthetic.labels), [10] * synthetic.num_classes)
    assert synthetic.lengths.min() >= 30 and synthetic.lengths.max() <= 150
    assert np.ptp(synthetic.lengths) > 40  # lengths really vary
    assert set(synthetic.meta("persons")) == {1, 2}
    assert set(synthetic.meta("camera")) == {1, 2, 3}
    assert synthetic.verify() == []
    assert 400 <= DEFAULT_CLIPS_PER_CLASS * synthetic.num_classes <= 600


def test_cross_subject_protocol_separates_subjects(synthetic):
    train, test = synthetic.split_indices("", "train"), synthetic.split_indices("", "test")
    assert len(train) + len(test) == synthetic.num_clips
    subject = synthetic.meta("subject")
    assert set(subject[train]).isdisjoint(subject[test])
    assert set(subject[train]) == set(range(1, 20, 2))
    assert set(synthetic.labels[train]) == set(synthetic.labels[test]) == set(range(synthetic.num_classes))


def test_skeletons_are_rigid_bodies_standing_upright(synthetic):
    bones = np.array(NTU25.bones)
    for i in range(synthetic.num_clips):
        clip = synthetic.clip(i)[:, :synthetic.meta("persons")[i]]  # (T, P, 25, 3)
        length = np.linalg.norm(clip[..., bones[:, 0], :] - clip[..., bones[:, 1], :], axis=-1)  # (T, P, 24)
        assert length.std(axis=0).max() < 0.04, synthetic.names[i]  # bones keep their length, up to noise
        assert 0.02 < length.mean(axis=0).min() and length.mean(axis=0).max() < 0.6
        height = clip[..., 3, 1] - clip[..., [15, 19], 1].min(axis=-1)  # head above the lower foot; y is up
        assert height.max() > 1.4 and height.min() > 0.7, synthetic.names[i]  # even in a deep squat


def _features(clip: np.ndarray) -> np.ndarray:
    """Cheap view-invariant summaries of the first person: joint heights and horizontal distances from
    the pelvis (mean, spread), plus how far the pelvis rises and travels."""
    x = clip[:, 0].astype(np.float64)
    rel = x - x[:, :1]
    radius = np.hypot(rel[..., 0], rel[..., 2])
    root = x[:, 0]
    travel = np.hypot(*(root[-1] - root[0])[[0, 2]])
    return np.concatenate([rel[..., 1].mean(0), rel[..., 1].std(0), radius.mean(0), radius.std(0),
                           [np.ptp(root[:, 1]), travel]])


def test_classes_are_separable_across_subjects(synthetic):
    features = np.stack([_features(synthetic.clip(i)) for i in range(synthetic.num_clips)])
    train, test = synthetic.split_indices("xsub", "train"), synthetic.split_indices("xsub", "test")
    z = (features - features[train].mean(0)) / (features[train].std(0) + 1e-6)
    labels = synthetic.labels
    centroids = np.stack([z[train][labels[train] == c].mean(0) for c in range(synthetic.num_classes)])
    predicted = np.argmin(((z[test, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (predicted == labels[test]).mean() > 0.8  # chance is 0.1
