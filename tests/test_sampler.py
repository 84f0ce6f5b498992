"""Length-bucketed batching: every item once per epoch, reproducible, little padding, rank-consistent."""

import numpy as np
import pytest
from torch.utils.data import DataLoader

from cascade_cli.config import DataConfig
from cascade_cli.data.format import open_dataset
from cascade_cli.data.pipeline import ClipDataset, collate_clips
from cascade_cli.data.sampler import LengthBucketSampler, item_lengths, padding_ratio


def penn_like(n=2000, seed=0):
    """Lengths shaped like Penn Action's: lognormal, median 56, clipped to 18-663 frames."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.lognormal(np.log(56), 0.68, n)), 18, 663).astype(np.int64)


def epoch(sampler, e):
    sampler.set_epoch(e)
    return list(sampler)


@pytest.mark.parametrize("options", [{}, {"bucket": False}, {"shuffle": False}, {"max_frames_per_batch": 2000}])
def test_every_item_exactly_once_per_epoch(options):
    lengths = penn_like(1003)
    sampler = LengthBucketSampler(lengths, 16, seed=3, **options)
    for e in range(3):
        items = np.concatenate(epoch(sampler, e))
        assert np.array_equal(np.sort(items), np.arange(len(lengths)))


def test_drop_last_drops_only_the_short_batch():
    sampler = LengthBucketSampler(penn_like(1003), 16, seed=3, drop_last=True)
    batches = epoch(sampler, 0)
    assert len(batches) == 1003 // 16 and all(len(b) == 16 for b in batches)
    assert len(set(np.concatenate(batches))) == 1003 // 16 * 16


def test_deterministic_per_seed_and_epoch_and_different_across_them():
    lengths = penn_like(500)
    a, b = LengthBucketSampler(lengths, 8, seed=1), LengthBucketSampler(lengths, 8, seed=1)
    assert epoch(a, 4) == epoch(b, 4)
    assert epoch(a, 0) == epoch(LengthBucketSampler(lengths, 8, seed=1), 0)  # set_epoch back and forth
    assert epoch(a, 0) != epoch(a, 1)
    assert epoch(a, 0) != epoch(LengthBucketSampler(lengths, 8, seed=2), 0)
    ordered = LengthBucketSampler(lengths, 8, seed=1, shuffle=False)
    assert epoch(ordered, 0) == epoch(ordered, 1)


def test_bucketed_batches_waste_far_less_padding_than_random_ones():
    lengths = penn_like(2000)
    bucketed = padding_ratio(epoch(LengthBucketSampler(lengths, 32, seed=0), 0), lengths)
    random = padding_ratio(epoch(LengthBucketSampler(lengths, 32, seed=0, bucket=False), 0), lengths)
    assert random > 1.5  # random batches of 32 pay for more padding frames than real ones
    assert bucketed < 0.15 and bucketed < random / 10


def test_frame_budget_is_respected_and_batches_are_maximal():
    lengths = penn_like(2000)
    budget = 4 * 663
    batches = epoch(LengthBucketSampler(lengths, 32, seed=0, max_frames_per_batch=budget), 0)
    for b in batches:
        assert len(b) * lengths[b].max() <= budget
    assert np.mean([len(b) for b in batches]) > 10  # short clips share a step instead of 4 per step
    one_long = epoch(LengthBucketSampler(np.array([700, 10, 10]), 4, seed=0, max_frames_per_batch=500), 0)
    assert sorted(map(len, one_long)) == [1, 2]  # an item over budget still gets its own batch


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("options", [{}, {"max_frames_per_batch": 3000}])
def test_ranks_split_each_global_batch(world_size, options):
    lengths = penn_like(960)
    single = epoch(LengthBucketSampler(lengths, 32, seed=7, **options), 2)
    ranks = [epoch(LengthBucketSampler(lengths, 32, seed=7, rank=r, world_size=world_size, **options), 2)
             for r in range(world_size)]
    assert all(len(r) == len(single) for r in ranks)
    for i, batch in enumerate(single):
        assert sorted(sum((r[i] for r in ranks), [])) == sorted(batch)
    union = np.concatenate([np.concatenate(r) for r in ranks])
    repeats = sum(max(0, world_size - len(b)) for b in single)  # padding of batches shorter than world_size
    assert set(union) == set(range(len(lengths))) and len(union) == len(lengths) + repeats


def test_short_global_batch_is_padded_by_repeating_its_own_items():
    lengths = penn_like(65)  # 2 x 32 + 1: the last global batch holds one item
    single = epoch(LengthBucketSampler(lengths, 32, seed=0), 0)
    short = next(b for b in single if len(b) == 1)
    ranks = [epoch(LengthBucketSampler(lengths, 32, seed=0, rank=r, world_size=3), 0) for r in range(3)]
    i = single.index(short)
    assert [r[i] for r in ranks] == [short] * 3
    assert {len(r) for r in ranks} == {len(single)}


@pytest.mark.parametrize("options", [{}, {"max_frames_per_batch": 1500}, {"drop_last": True},
                                     {"world_size": 3, "rank": 2}])
def test_len_matches_the_iteration(options):
    sampler = LengthBucketSampler(penn_like(777), 16, seed=5, **options)
    for e in range(3):
        sampler.set_epoch(e)
        assert len(sampler) == len(list(sampler))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        LengthBucketSampler(np.array([3, 0]), 2, seed=0)
    with pytest.raises(ValueError):
        LengthBucketSampler(np.array([3, 4]), 2, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError):
        LengthBucketSampler(np.array([3, 4]), 2, seed=0, max_frames_per_batch=10, drop_last=True)


@pytest.mark.parametrize("frames", [0, 16])
def test_item_lengths_are_the_lengths_the_pipeline_produces(tiny_dataset, frames):
    ds = open_dataset(tiny_dataset)
    items = ClipDataset(ds, np.arange(0, ds.num_clips, 3), DataConfig(frames=frames, repeat=2), train=True, seed=0)
    lengths = item_lengths(items)
    assert np.array_equal(lengths, [len(items[k][0]) for k in range(len(items))])
    loader = DataLoader(items, batch_sampler=LengthBucketSampler(lengths, 4, seed=0), collate_fn=collate_clips)
    assert sum(len(b.labels) for b in loader) == len(items)


def test_bucketing_does_not_change_any_clips_logits(tiny_dataset):
    """Bucketed batches hold different neighbours and less padding; with masks, each clip's logits
    must be exactly what they are in random batches."""
    import torch

    from cascade_cli.config import load_config
    from cascade_cli.model import build_classifier, padding_mask
    from tests.conftest import TINY

    cfg = load_config(None, [*TINY, "data.frames=0", "model.max_frames=160"])
    ds = open_dataset(tiny_dataset)
    items = ClipDataset(ds, np.arange(ds.num_clips), cfg.data, train=False, seed=0)
    torch.manual_seed(0)
    model = build_classifier(cfg.model, 25, 3, ds.num_classes).eval()

    def logits(bucket: bool) -> dict[int, torch.Tensor]:
        sampler = LengthBucketSampler(item_lengths(items), 8, seed=3, bucket=bucket)
        out = {}
        for batch_items in sampler:
            batch = collate_clips([items[i] for i in batch_items])
            with torch.no_grad():
                rows = model(batch.x, padding_mask(batch.lengths, batch.x.shape[1]))
            out.update(zip(batch_items, rows))
        return out

    bucketed, random = logits(True), logits(False)
    assert bucketed.keys() == random.keys() == set(range(ds.num_clips))
    assert all(torch.allclose(bucketed[i], random[i], atol=1e-5) for i in bucketed)


def _budget(setting, device="cpu", frames=0, lengths=None):
    import torch

    from cascade_cli.training.loop import frame_budget

    return frame_budget(setting, penn_like(1195) if lengths is None else lengths, 32, frames, torch.device(device))


def test_auto_frame_budget_only_on_cpu_for_clips_of_their_own_length():
    lengths = penn_like(1195)
    budget, why = _budget(-1, lengths=lengths)
    assert budget == round(32 * lengths.mean()) and "auto on cpu" in why
    assert _budget(-1, device="cuda")[0] == 0  # a GPU takes 32 long clips in its stride
    assert _budget(-1, frames=48)[0] == 0  # fixed-length clips: a budget would only restate the batch size
    assert _budget(0) == (0, "32 clips per batch")
    assert _budget(1500) == (1500, "up to 1500 frames per batch")


def test_auto_frame_budget_keeps_the_steps_of_an_epoch():
    """The recipe's learning rate schedule and its number of updates stay as tuned: the auto budget
    cuts about as many batches as fixed batches of 32 clips, while no batch of long clips holds 32."""
    lengths = penn_like(1195)
    budget, _ = _budget(-1, lengths=lengths)
    fixed = epoch(LengthBucketSampler(lengths, 32, seed=0), 0)
    capped = epoch(LengthBucketSampler(lengths, 32, seed=0, max_frames_per_batch=budget), 0)
    assert abs(len(capped) - len(fixed)) <= 0.15 * len(fixed)
    longest = max(capped, key=lambda b: lengths[b].max())
    assert len(longest) * lengths[longest].max() <= budget and len(longest) < 8
