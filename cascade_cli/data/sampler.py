"""Batches of clips of similar length, optionally under a frame budget, split across ranks.

With variable-length clips (Penn Action: 18-663 frames, median 56) a random batch is padded to its
longest clip, so most of the compute goes to padding; and a fixed batch size must be small enough
for the longest clips, which starves the accelerator on short ones. Sorting by length inside
large random chunks keeps batches nearly free of padding while each epoch still mixes its data,
and a frame budget (items x longest length) keeps the cost of every step about the same.

Every draw is a function of (seed, epoch), so an epoch's batches are the same on every rank, in
every resumed run and with any number of DataLoader workers.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from cascade_cli.data.pipeline import ClipDataset

BUCKET_BATCHES = 50  # items per sorted chunk, in batches: big enough to find equal lengths, small enough to mix


def item_lengths(items: ClipDataset) -> np.ndarray:
    """Frames of every item of a ClipDataset after its pipeline: data.frames, or each clip's own length
    (temporal sampling is the only step that changes the number of frames)."""
    if items.cfg.frames > 0:
        return np.full(len(items), items.cfg.frames, dtype=np.int64)
    return np.tile(items.dataset.lengths[items.indices].astype(np.int64), items.copies)


def padding_ratio(batches: Sequence[Sequence[int]], lengths: np.ndarray) -> float:
    """Padded frames / real frames when every batch is padded to its longest item."""
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    real = sum(int(lengths[b].sum()) for b in batches)
    return padded / real - 1.0


class LengthBucketSampler(Sampler[list[int]]):
    """A batch sampler (pass it as DataLoader(batch_sampler=...)) yielding lists of item indices.

    Per epoch: a permutation seeded by (seed, epoch) (identity when shuffle=False); with bucket=True,
    chunks of BUCKET_BATCHES x batch_size items are sorted by length; the order is then cut into
    batches of batch_size items, or, when max_frames_per_batch > 0, greedily while items x longest
    length <= max_frames_per_batch (at least one item; batch_size then only sizes the chunks);
    finally the batch order is shuffled (when shuffle=True). bucket=False with shuffle=True is plain
    random batching, the official recipe. drop_last drops the one short batch of fixed-size batching.

    Distributed (world_size > 1): every rank computes the same global batches and takes items
    rank::world_size of each, so the global batch equals the single-process one and every rank
    yields the same number of batches (local sizes differ by at most one item). A global batch of
    fewer than world_size items (the last one, or one long clip under a frame budget) is padded by
    repeating its own items so no rank gets an empty batch; only those repeats are seen twice.

    Call set_epoch(epoch) before each epoch; len() is the number of batches of the current epoch.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, *, seed: int, max_frames_per_batch: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True, drop_last: bool = False,
                 bucket: bool = True):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.ndim != 1 or len(self.lengths) == 0 or self.lengths.min() < 1:
            raise ValueError("lengths: expected a non-empty 1-D array of positive frame counts")
        if batch_size < 1 or max_frames_per_batch < 0:
            raise ValueError(f"batch_size must be >= 1 and max_frames_per_batch >= 0, got {batch_size}, "
                             f"{max_frames_per_batch}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if drop_last and max_frames_per_batch:
            raise ValueError("drop_last applies to fixed-size batches; a frame budget has no short last batch")
        self.batch_size, self.budget = batch_size, max_frames_per_batch
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shuffle, self.drop_last, self.bucket = shuffle, drop_last, bucket
        self.epoch = 0
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _cut(self, order: np.ndarray) -> list[np.ndarray]:
        if not self.budget:
            return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        batches, start, longest = [], 0, 0
        for i, n in enumerate(self.lengths[order]):
            longest = max(longest, n)
            if i > start and (i - start + 1) * longest > self.budget:
                batches.append(order[start:i])
                start, longest = i, n
        batches.append(order[start:])
        return batches

    def global_batches(self) -> list[np.ndarray]:
        """The epoch's batches before the split across ranks (cached per epoch)."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.lengths)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        batches = []
        chunk = BUCKET_BATCHES * self.batch_size if self.bucket else n  # chunks end on batch boundaries
        for start in range(0, n, chunk):
            part = order[start:start + chunk]
            if self.bucket:
                part = part[np.argsort(self.lengths[part], kind="stable")]  # ties keep the random order
            batches += self._cut(part)
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        self._cache = (self.epoch, batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            if len(batch) < self.world_size:
                batch = np.resize(batch, self.world_size)  # repeats the batch's own items
            yield batch[self.rank::self.world_size].tolist()

    def __len__(self) -> int:
        return len(self.global_batches())
