"""The memory buffer of class-incremental rehearsal: reservoir sampling, optionally compressed.

Reservoir sampling (Vitter's algorithm R, as Mammoth implements it) gives every clip of the stream
the same chance, capacity / seen, to be held, whatever its task. CHARON's compression keeps every
s-th frame of a clip and grants as many slots as fit in the bytes of `capacity` uncompressed clips
(about s times as many; each slot's label, task and logits counted too, so a compressed buffer
never holds more bytes than a plain one); a clip is restored to its full length by linear
interpolation, which has no parameters to learn.
"""

from __future__ import annotations

import numpy as np


def compress(x: np.ndarray, step: int) -> np.ndarray:
    """(T, ...) -> (ceil(T / step), ...): every step-th frame, the first included."""
    return x[::step]


def restore(kept: np.ndarray, step: int, frames: int) -> np.ndarray:
    """Inverse of compress: frames kept at 0, step, 2 step, ... linearly interpolated back to `frames`;
    the frames after the last kept one continue its last segment, so linear motion comes back exactly."""
    if step == 1 or len(kept) == 1:
        return kept if step == 1 else np.repeat(kept, frames, axis=0)
    t = np.arange(frames)
    lo = np.minimum(t // step, len(kept) - 2)  # (frames,) the kept frame before t (the last segment's start past it)
    w = ((t - lo * step) / step).astype(np.float32).reshape(-1, *([1] * (kept.ndim - 1)))
    return (1 - w) * kept[lo] + w * kept[lo + 1]


class ReservoirBuffer:
    """Up to capacity * compression clips of one fixed shape, with their label, task and logits."""

    def __init__(self, capacity: int, frames: int, frame_shape: tuple[int, ...], num_classes: int,
                 compression: int = 1, seed: int = 0):
        if capacity < 1 or compression < 1:
            raise ValueError("buffer capacity and compression must be at least 1")
        kept = len(range(0, frames, compression))
        per_frame, extra = int(np.prod(frame_shape)) * 4, 8 + 8 + 4 * num_classes  # label, task, logits
        self.slots = capacity * (frames * per_frame + extra) // (kept * per_frame + extra)
        self.frames, self.compression = frames, compression
        self.x = np.zeros((self.slots, kept, *frame_shape), np.float32)
        self.labels = np.zeros(self.slots, np.int64)
        self.tasks = np.zeros(self.slots, np.int64)
        self.logits = np.zeros((self.slots, num_classes), np.float32)
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return min(self.seen, self.slots)

    @property
    def nbytes(self) -> int:
        """What the stored clips, labels, tasks and logits take: compression keeps it at the bytes
        of capacity full clips."""
        return self.x.nbytes + self.labels.nbytes + self.tasks.nbytes + self.logits.nbytes

    def add(self, x: np.ndarray, labels: np.ndarray, task: int, logits: np.ndarray | None = None) -> None:
        """Offer a batch of clips (B, frames, ...) to the reservoir."""
        for i in range(len(x)):
            slot = self.seen if self.seen < self.slots else int(self.rng.integers(0, self.seen + 1))
            self.seen += 1
            if slot < self.slots:
                self.x[slot] = compress(x[i], self.compression)
                self.labels[slot], self.tasks[slot] = labels[i], task
                if logits is not None:
                    self.logits[slot] = logits[i]

    def sample(self, n: int) -> np.ndarray:
        """Slot indices of a random mini-batch (without replacement)."""
        return self.rng.choice(len(self), size=min(n, len(self)), replace=False)

    def clips(self, slots: np.ndarray) -> np.ndarray:
        """(len(slots), frames, ...) the stored clips at full length."""
        return np.stack([restore(self.x[s], self.compression, self.frames) for s in slots])

    def state_dict(self) -> dict:
        return {"x": self.x, "labels": self.labels, "tasks": self.tasks, "logits": self.logits,
                "seen": self.seen, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.x, self.labels, self.tasks, self.logits = state["x"], state["labels"], state["tasks"], state["logits"]
        self.seen = int(state["seen"])
        self.rng.bit_generator.state = state["rng"]
