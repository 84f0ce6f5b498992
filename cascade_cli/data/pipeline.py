"""Training-time data: validation split, per-clip transforms, and batching of ragged clips.

A clip goes through, in order: person selection -> centring -> temporal sampling -> augmentation
(training only). The temporal step mimics the CTR-GCN NTU feeder used by the official CascadeFormer
NTU code (reference cascadeformer.md §B.8): a random crop of the valid frames, linearly resized.

Every random draw comes from a generator seeded by (seed, epoch, clip index), so an epoch's
augmentations do not depend on the number of DataLoader workers or the order clips are visited, and
an evaluation pass draws nothing at all.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from cascade_cli.config import DataConfig
from cascade_cli.data.format import PreparedDataset
from cascade_cli.errors import UserError


def stratified_split(labels: np.ndarray, indices: np.ndarray, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out round(fraction * n) clips of every class for validation.

    A class with at least two clips gives at least one when fraction > 0, so every class is
    validated, and always keeps at least one for training, so every class is learnable.
    """
    indices = np.sort(np.asarray(indices, dtype=np.int64))
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels[indices]):
        members = indices[labels[indices] == c]
        n_val = round(fraction * len(members))
        if fraction > 0 and len(members) >= 2:
            n_val = max(n_val, 1)
        n_val = min(n_val, len(members) - 1)
        val.append(rng.permutation(members)[:n_val])
    val = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    return np.setdiff1d(indices, val), val


# ----------------------------------------------------------------------------------------------
# Per-clip transforms (numpy, float32)


def select_person(clip: np.ndarray, rule: str) -> np.ndarray:
    """[T, M, J, C] -> [T, J, C]: the one person the model sees. A person who is all zeros (absent)
    never wins, so the rule only decides between people actually in the clip."""
    visible = np.abs(clip).sum(axis=(2, 3)) > 0  # (T, M) person m seen in frame t
    if rule == "first":
        score = -np.arange(clip.shape[1], dtype=np.float64)
    elif rule == "abs_sum":  # the official NTU code's "most active" person
        score = np.abs(clip).sum(axis=(0, 2, 3), dtype=np.float64)
    elif rule == "motion_variance":  # the paper's: temporal variance over the frames a person is seen
        seen = visible[:, :, None, None]
        count = np.maximum(visible.sum(axis=0), 1)[:, None, None]  # (M, 1, 1)
        mean = (clip * seen).sum(axis=0, dtype=np.float64) / count
        score = (((clip - mean) * seen) ** 2).sum(axis=0) / count  # (M, J, C)
        score = score.sum(axis=(1, 2))
    else:
        raise ValueError(f"unknown person rule {rule!r}")
    score = np.where(visible.any(axis=0), score, -np.inf)
    return clip[:, int(np.argmax(score))]


def center(x: np.ndarray, joint: int) -> np.ndarray:
    """Subtract `joint`'s position in the first frame the person is seen. Frames where the person is
    absent stay exactly zero, as in CTR-GCN's seq_translation, so absence remains recognisable."""
    visible = np.abs(x).sum(axis=(1, 2)) > 0  # (T,)
    if not visible.any():
        return x
    origin = x[np.argmax(visible), joint]  # (C,)
    return np.where(visible[:, None, None], x - origin, x)


def resize(x: np.ndarray, frames: int) -> np.ndarray:
    """[L, J, C] -> [frames, J, C] by linear interpolation in time, with the sample grid of
    F.interpolate(..., align_corners=False) that CTR-GCN's valid_crop_resize uses."""
    L = len(x)
    src = np.clip((np.arange(frames) + 0.5) * L / frames - 0.5, 0, L - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, L - 1)
    w = (src - lo).astype(np.float32)[:, None, None]
    return (1 - w) * x[lo] + w * x[hi]


def sample_frames(x: np.ndarray, cfg: DataConfig, rng: np.random.Generator | None) -> np.ndarray:
    """[L, J, C] -> [cfg.frames, J, C]; rng is None for evaluation, which is deterministic."""
    L = len(x)
    if cfg.sampling == "indices":
        if rng is None:
            return x[np.linspace(0, L - 1, cfg.frames).astype(np.int64)]
        return x[np.sort(rng.integers(0, L, cfg.frames))]
    if rng is None:  # centre crop keeping eval_crop of the frames
        bias = int((1 - cfg.eval_crop) * L / 2)
        return resize(x[bias:L - bias], cfg.frames)
    # Random crop of a share p ~ U(crop_min, 1), but never shorter than the output unless the clip is.
    p = rng.uniform(cfg.crop_min, 1.0)
    length = min(max(int(np.floor(L * p)), cfg.frames), L)
    start = int(rng.integers(0, L - length + 1))
    return resize(x[start:start + length], cfg.frames)


def rotation_matrix(angles: np.ndarray) -> np.ndarray:
    """R = Rz @ Ry @ Rx for angles (ax, ay, az) in radians, as in CTR-GCN's random_rot."""
    (cx, cy, cz), (sx, sy, sz) = np.cos(angles), np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def augment(x: np.ndarray, cfg: DataConfig, rng: np.random.Generator) -> np.ndarray:
    """One random rotation (3-D only) and one isotropic scale for the whole clip."""
    if cfg.rotate > 0 and x.shape[-1] == 3:
        x = x @ rotation_matrix(rng.uniform(-cfg.rotate, cfg.rotate, 3)).T.astype(np.float32)
    if cfg.scale > 0:
        x = x * np.float32(rng.uniform(1 - cfg.scale, 1 + cfg.scale))
    return x


class ClipDataset(Dataset):
    """Clips of a prepared dataset as (x [T, J, C] float32, label) pairs, transformed per DataConfig.

    Call set_epoch before each training epoch to draw fresh augmentations. Workers see the new epoch
    only if the DataLoader re-creates them each epoch (the default, persistent_workers=False).
    """

    def __init__(self, dataset: PreparedDataset, indices: Sequence[int] | np.ndarray, cfg: DataConfig,
                 train: bool, seed: int):
        if cfg.center_joint >= dataset.layout.num_joints:
            raise UserError(f"data.center_joint is {cfg.center_joint}, but {dataset.path} has "
                            f"{dataset.layout.num_joints} joints (0..{dataset.layout.num_joints - 1})")
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.cfg, self.train, self.seed = cfg, train, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        clip_index = int(self.indices[k])
        rng = np.random.default_rng([self.seed, self.epoch, clip_index]) if self.train else None
        x = select_person(self.dataset.clip(clip_index), self.cfg.person)  # (L, J, C)
        if self.cfg.center_joint >= 0:
            x = center(x, self.cfg.center_joint)
        if self.cfg.frames > 0:
            x = sample_frames(x, self.cfg, rng)  # (frames, J, C)
        if rng is not None:
            x = augment(x, self.cfg, rng)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), int(self.dataset.labels[clip_index])


class Batch(NamedTuple):
    x: torch.Tensor  # (B, T_max, J, C), zeros after each clip's length
    lengths: torch.Tensor  # (B,) long
    labels: torch.Tensor  # (B,) long


def collate_clips(items: Sequence[tuple[torch.Tensor, int]]) -> Batch:
    clips, labels = zip(*items)
    return Batch(x=pad_sequence(list(clips), batch_first=True),
                 lengths=torch.tensor([len(c) for c in clips], dtype=torch.long),
                 labels=torch.tensor(labels, dtype=torch.long))
