"""Class-incremental building blocks: class orders and tasks, the reservoir buffer and its
compression, and the summaries of an accuracy matrix."""

import json

import numpy as np
import pytest
from scipy.stats import chisquare

from cascade_cli.continual.buffer import ReservoirBuffer, compress, restore
from cascade_cli.continual.tasks import class_order, split_tasks
from cascade_cli.data.registry import NTU60
from cascade_cli.errors import UserError
from cascade_cli.metrics import continual_metrics
from tests.conftest import shared_dataset


def test_reservoir_sampling_keeps_every_part_of_the_stream_alike():
    buffer = ReservoirBuffer(capacity=2000, frames=4, frame_shape=(1,), num_classes=2, seed=0)
    stream = 20_000
    for start in range(0, stream, 500):
        ids = np.arange(start, start + 500)
        buffer.add(ids[:, None, None].repeat(4, axis=1).astype(np.float32), ids % 2, task=start // 4000)
    assert len(buffer) == 2000 and buffer.seen == stream
    kept = buffer.x[:, 0, 0].astype(int)
    assert len(set(kept)) == 2000
    per_decile = np.bincount(kept // (stream // 10), minlength=10)
    assert chisquare(per_decile).pvalue > 0.01, per_decile  # a first-in or last-in buffer fails this badly
    assert np.array_equal(np.sort(buffer.tasks), np.sort(kept // 4000))  # each clip kept its task


def test_compression_restores_linear_motion_exactly_and_real_motion_closely():
    t = np.arange(64, dtype=np.float32)
    linear = np.stack([0.5 + 0.01 * t, -0.2 * t, 3.0 + 0 * t], axis=1)[:, None, :]  # (64, 1 joint, 3)
    np.testing.assert_allclose(restore(compress(linear, 5), 5, 64), linear, atol=1e-5)
    assert compress(linear, 5).shape == (13, 1, 3)
    clip = np.asarray(json.loads(next(iter(sorted(shared_dataset("nw_ucla", "all_sqe").glob("a01_*.json"))))
                                 .read_text())["skeletons"], np.float32)[:60]  # (60, 20, 3) metres
    error = np.abs(restore(compress(clip, 5), 5, len(clip)) - clip).mean()
    motion = np.abs(np.diff(clip, axis=0)).mean() * 5  # how far a joint moves in 5 frames
    assert error < 0.5 * motion, (error, motion)


def test_compressed_buffer_holds_more_clips_in_the_same_bytes():
    plain = ReservoirBuffer(capacity=50, frames=60, frame_shape=(20, 3), num_classes=10)
    packed = ReservoirBuffer(capacity=50, frames=60, frame_shape=(20, 3), num_classes=10, compression=5)
    assert 240 <= packed.slots <= 250 and packed.nbytes <= plain.nbytes  # about 5x the clips, no more bytes
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 60, 20, 3)).astype(np.float32)
    packed.add(x, rng.integers(0, 10, 300), task=0, logits=rng.normal(size=(300, 10)).astype(np.float32))
    assert len(packed) == packed.slots and packed.clips(packed.sample(8)).shape == (8, 60, 20, 3)
    state = packed.state_dict()
    again = ReservoirBuffer(capacity=50, frames=60, frame_shape=(20, 3), num_classes=10, compression=5)
    again.load_state_dict({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()})
    assert np.array_equal(again.sample(16), packed.sample(16))  # the RNG state travels with the buffer


def test_accuracy_matrix_summaries_by_hand():
    a = np.array([[0.9, 0.0, 0.0],
                  [0.6, 0.8, 0.0],
                  [0.3, 0.7, 0.9]])
    m = continual_metrics(a)
    assert m["faa"] == pytest.approx((0.3 + 0.7 + 0.9) / 3)
    assert m["forgetting"] == pytest.approx(((0.9 - 0.3) + (0.8 - 0.7)) / 2)
    assert m["bwt"] == pytest.approx(((0.3 - 0.9) + (0.7 - 0.8)) / 2)
    assert m["average_incremental_accuracy"] == pytest.approx((0.9 + 0.7 + (0.3 + 0.7 + 0.9) / 3) / 3)
    assert continual_metrics(np.array([[0.5]]))["forgetting"] is None


def test_class_orders_and_tasks(tmp_path):
    names = list(NTU60.class_names)
    first = split_tasks(class_order("charon-ntu60", names), 6)[0]
    assert [f"A{c + 1:03d}" for c in first] == ["A028", "A019", "A016", "A043", "A055", "A060", "A007", "A030",
                                                "A035", "A054"]
    assert class_order("random:3", names) == class_order("random:3", names) != class_order("random:4", names)
    assert sorted(class_order("random:3", names)) == list(range(60))
    nucla = ["pick up with one hand", "pick up with two hands", "drop trash", "walk around", "sit down", "stand up",
             "donning", "doffing", "throw", "carry"]
    (tmp_path / "order.txt").write_text("throw\n0\ncarry\n1\n2\n3\n4\n5\n6\n7\n")
    assert class_order(str(tmp_path / "order.txt"), nucla) == [8, 0, 9, 1, 2, 3, 4, 5, 6, 7]
    (tmp_path / "order.txt").write_text("throw\n0\nthrow\n1\n2\n3\n4\n5\n6\n7\n")
    with pytest.raises(UserError, match=r"missing \['carry'\], repeated \['throw'\]"):
        class_order(str(tmp_path / "order.txt"), nucla)
    (tmp_path / "order.txt").write_text("throw\nfly\n")
    with pytest.raises(UserError, match="line 2: 'fly' is not a class name"):
        class_order(str(tmp_path / "order.txt"), nucla)
    with pytest.raises(UserError, match="divisors: 1, 2, 5, 10"):
        split_tasks(list(range(10)), 3)
    with pytest.raises(UserError, match="60 classes"):
        class_order("charon-ntu60", nucla)
