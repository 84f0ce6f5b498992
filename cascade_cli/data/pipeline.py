"""Training-time data: validation split, per-clip transforms, and batching of ragged clips.

A clip goes through the steps listed in ClipDataset (person selection, centring, augmentation,
normalisation, temporal sampling, drops, representation). The temporal step mimics the CTR-GCN NTU feeder used by the official CascadeFormer
NTU code (reference cascadeformer.md §B.8): a random crop of the valid frames, linearly resized.

Every random draw comes from a generator seeded by (seed, epoch, clip index), so an epoch's
augmentations do not depend on the number of DataLoader workers or the order clips are visited, and
an evaluation pass draws nothing at all.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from cascade_cli.config import DataConfig
from cascade_cli.data.format import PreparedDataset
from cascade_cli.data.representation import output_shape, represent
from cascade_cli.errors import UserError
from cascade_cli.layouts import Layout


# ----------------------------------------------------------------------------------------------
# Per-clip transforms (numpy, float32)


def person_scores(clip: np.ndarray, rule: str) -> np.ndarray:
    """[T, M, J, C] -> (M,) activity score per person; absent persons (all zeros) score -inf."""
    visible = np.abs(clip).sum(axis=(2, 3)) > 0  # (T, M) person m seen in frame t
    if rule == "first":
        score = -np.arange(clip.shape[1], dtype=np.float64)
    elif rule == "abs_sum":  # the official NTU code's "most active" person
        score = np.abs(clip).sum(axis=(0, 2, 3), dtype=np.float64)
    elif rule == "motion_variance":  # the paper's: temporal variance over the frames a person is seen
        seen = visible[:, :, None, None]
        count = np.maximum(visible.sum(axis=0), 1)[:, None, None]  # (M, 1, 1)
        mean = (clip * seen).sum(axis=0, dtype=np.float64) / count
        score = ((((clip - mean) * seen) ** 2).sum(axis=0) / count).sum(axis=(1, 2))
    else:
        raise ValueError(f"unknown person rule {rule!r}")
    return np.where(visible.any(axis=0), score, -np.inf)


def select_persons(clip: np.ndarray, rule: str) -> np.ndarray:
    """[T, M, J, C] -> [T, P, J, C]: the one most active person by `rule` (P = 1), or all (rule both)."""
    if rule == "both":
        return clip
    best = int(np.argmax(person_scores(clip, rule)))
    return clip[:, best:best + 1]


def center(x: np.ndarray, joint: int) -> np.ndarray:
    """[T, P, J, C]: subtract `joint` of the first person in the first frame that person is seen,
    from every person. Frames where a person is absent stay exactly zero, as in CTR-GCN's
    seq_translation, so absence remains recognisable."""
    visible = np.abs(x).sum(axis=(2, 3)) > 0  # (T, P)
    if not visible[:, 0].any():
        return x
    origin = x[np.argmax(visible[:, 0]), 0, joint]  # (C,)
    return np.where(visible[:, :, None, None], x - origin, x)


def resize(x: np.ndarray, frames: int) -> np.ndarray:
    """[L, ...] -> [frames, ...] by linear interpolation in time, with the sample grid of
    F.interpolate(..., align_corners=False) that CTR-GCN's valid_crop_resize uses."""
    L = len(x)
    src = np.clip((np.arange(frames) + 0.5) * L / frames - 0.5, 0, L - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, L - 1)
    w = (src - lo).astype(np.float32).reshape(-1, *([1] * (x.ndim - 1)))
    return (1 - w) * x[lo] + w * x[hi]


def sample_frames(x: np.ndarray, cfg: DataConfig, rng: np.random.Generator | None, view: int = 0,
                  views: int = 1) -> np.ndarray:
    """[L, ...] -> [cfg.frames, ...]; rng is None for evaluation, which is deterministic and takes
    view number `view` of `views` temporal views (see temporal_view)."""
    if rng is None:
        return temporal_view(x, cfg, view, views)
    L = len(x)
    if cfg.sampling == "indices":
        return x[np.sort(rng.integers(0, L, cfg.frames))]
    # Random crop of a share p ~ U(crop_min, 1), but never shorter than the output unless the clip is.
    p = rng.uniform(cfg.crop_min, 1.0)
    length = min(max(int(np.floor(L * p)), cfg.frames), L)
    start = int(rng.integers(0, L - length + 1))
    return resize(x[start:start + length], cfg.frames)


def temporal_view(x: np.ndarray, cfg: DataConfig, view: int, views: int) -> np.ndarray:
    """[L, ...] -> [cfg.frames, ...]: view number `view` of `views` deterministic temporal views.

    resize: a crop of the evaluation crop's length (eval_crop of the clip), linearly resized;
    indices: the evenly spaced index grid shifted by a fraction of its step. View k sits at the
    centre of the k-th of `views` equal parts of the room the view can move in, so a single view is
    the centre crop (the classic evaluation sampling) and more views spread symmetrically around it.
    With the default eval_crop=0.95 resize views can move by only 5 % of the clip; lower it for
    views that differ.
    """
    L, shift = len(x), (view + 0.5) / views
    if cfg.sampling == "indices":
        step = (L - 1) / max(cfg.frames - 1, 1)
        grid = np.linspace(0, L - 1, cfg.frames) + (shift - 0.5) * step
        return x[np.clip(grid, 0, L - 1).astype(np.int64)]
    room = 2 * int((1 - cfg.eval_crop) * L / 2)
    start = round(shift * room)
    return resize(x[start:start + L - room], cfg.frames)


def rotation_matrix(angles: np.ndarray) -> np.ndarray:
    """R = Rz @ Ry @ Rx for angles (ax, ay, az) in radians, as in CTR-GCN's random_rot."""
    (cx, cy, cz), (sx, sy, sz) = np.cos(angles), np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def augment(x: np.ndarray, cfg: DataConfig, rng: np.random.Generator) -> np.ndarray:
    """One random rotation (3-D only), one isotropic scale and one shear (2-D only) for the whole
    clip, all persons alike."""
    if cfg.rotate > 0 and x.shape[-1] == 3:
        angles = rng.uniform(-cfg.rotate, cfg.rotate, 3)
        if cfg.rotate_axes == "xy":
            angles[2] = 0.0
        x = x @ rotation_matrix(angles).T.astype(np.float32)
    if cfg.scale > 0:
        x = x * np.float32(rng.uniform(1 - cfg.scale, 1 + cfg.scale))
    if cfg.shear > 0 and x.shape[-1] == 2:
        a, b = rng.uniform(-cfg.shear, cfg.shear, 2)
        seen = (x != 0).any(axis=-1, keepdims=True)  # (..., J, 1): missing joints are all zeros
        if seen.any():
            pivot = x[seen[..., 0]].mean(axis=0)
            sheared = (x - pivot) @ np.array([[1.0, a], [b, 1.0]], np.float32).T + pivot
            x = np.where(seen, sheared, x).astype(np.float32)
    return x


def mirror(clip: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """[L, M, J, C] -> the clip seen in a mirror: x reflected about the mean x of its seen joints (a
    joint all zeros is missing and stays so), joint k taking the place of joint order[k] (the
    layout's `mirrored()`: left and right swap)."""
    if sorted(order) != list(range(clip.shape[-2])):
        raise ValueError(f"mirror: {list(order)} is not a permutation of the clip's {clip.shape[-2]} joints")
    seen = (clip != 0).any(axis=-1)  # (L, M, J)
    if not seen.any():
        return clip
    x = clip[..., 0]
    mirrored = clip.copy()
    mirrored[..., 0] = np.where(seen, 2 * x[seen].mean() - x, 0.0)
    return mirrored[..., list(order), :]


def mirror_order(layout, cfg: DataConfig, source: str) -> tuple[int, ...]:
    """The layout's mirror permutation when data.flip or data.eval_flip asks for one, else ()."""
    if cfg.flip == 0 and not cfg.eval_flip:
        return ()
    order = layout.mirrored()
    if not order:
        raise UserError(f"data.flip / data.eval_flip: layout {layout.name} of {source} has no joint names that "
                        "say left or right (left_*/right_*, L*/R*, *Left/*Right), so its mirror cannot be told")
    return order


def normalize(x: np.ndarray, how: str, image_size: tuple[float, float] | None) -> np.ndarray:
    """minmax: each axis of the clip mapped to [-1, 1] over all its points (official N-UCLA; it also
    cancels translation and scale). image: pixels divided by the image width/height to [-1, 1]."""
    if how == "minmax":
        lo = x.min(axis=tuple(range(x.ndim - 1)))
        span = np.maximum(x.max(axis=tuple(range(x.ndim - 1))) - lo, 1e-8)
        return ((x - lo) / span * 2 - 1).astype(np.float32)
    if how == "image":
        scale = np.ones(x.shape[-1], np.float32)
        scale[:2] = image_size
        return (x / scale * 2 - 1).astype(np.float32)
    return x


def drop_parts(x: np.ndarray, cfg: DataConfig, rng: np.random.Generator) -> np.ndarray:
    """[T, P, J, C]: the official N-UCLA axis drop (one whole axis zeroed) and joint drop (4-12 joints
    zeroed in 16-32 frames), each with its probability; bounds shrink for small clips and layouts."""
    T, _, J, C = x.shape
    x = x.copy()
    if cfg.axis_drop > 0 and rng.random() < cfg.axis_drop:
        x[..., rng.integers(C)] = 0
    if cfg.joint_drop > 0 and rng.random() < cfg.joint_drop:
        joints = rng.choice(J, size=int(rng.integers(min(4, J), min(12, J) + 1)), replace=False)
        frames = rng.choice(T, size=int(rng.integers(min(16, T), min(32, T) + 1)), replace=False)
        x[np.ix_(frames, np.arange(x.shape[1]), joints)] = 0
    return x


def resolve_center(cfg: DataConfig, layout: Layout, where: str) -> DataConfig:
    """data.center_joint=-2 names the layout's centre joint; the pipeline then sees its index."""
    if cfg.center_joint != -2:
        return cfg
    if layout.center is None:
        raise UserError(f"data.center_joint=-2 centres on the layout's centre joint, but layout {layout.name} of "
                        f"{where} names none (give it a `center` in its layout file, or set a joint index)")
    return replace(cfg, center_joint=layout.center)


def model_input_shape(dataset: PreparedDataset, cfg: DataConfig) -> tuple[int, int]:
    """(joints, channels) of one model input frame: persons side by side, in the chosen representation."""
    layout = dataset.layout
    joints, channels = output_shape(cfg.representation, layout.num_joints, len(layout.bones), layout.coords)
    persons = dataset.persons if cfg.person == "both" else 1
    return persons * joints, channels


class ClipDataset(Dataset):
    """Clips of a prepared dataset as (x [T, J', C'] float32, label) pairs, transformed per DataConfig.

    Order: persons -> invisible joints -> centring -> rotation/scale -> normalisation -> temporal
    sampling -> axis/joint drop -> representation -> persons side by side. Training sees `repeat`
    copies of every clip per epoch, each with its own augmentation; call set_epoch before each epoch
    to draw fresh ones (unless cfg.frozen_augmentation). Workers see the new epoch only if the
    DataLoader re-creates them each epoch (the default, persistent_workers=False). Evaluation sees
    each clip as `views` consecutive items, one per deterministic temporal view.
    """

    def __init__(self, dataset: PreparedDataset, indices: Sequence[int] | np.ndarray, cfg: DataConfig,
                 train: bool, seed: int, views: int = 1):
        layout = dataset.layout
        cfg = resolve_center(cfg, layout, str(dataset.path))
        if cfg.center_joint >= layout.num_joints:
            raise UserError(f"data.center_joint is {cfg.center_joint}, but {dataset.path} has "
                            f"{layout.num_joints} joints (0..{layout.num_joints - 1})")
        if cfg.normalize == "image" and not {"width", "height"} <= set(dataset.extra_fields):
            raise UserError(f"data.normalize=image needs per-clip width and height, which {dataset.path} "
                            "does not have (Penn Action has them); use minmax or none")
        if cfg.representation != "joints" and not layout.bones:
            raise UserError(f"data.representation={cfg.representation} needs bones, but layout "
                            f"{layout.name} of {dataset.path} has none")
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.cfg, self.train, self.seed = cfg, train, seed
        if views < 1 or (train and views > 1):
            raise ValueError(f"views={views}: one or more, and temporal views are for evaluation only")
        self.copies, self.views = (cfg.repeat if train else 1), views
        self.flips = 2 if cfg.eval_flip and not train else 1  # each evaluation view, and its mirror
        self.bones = np.asarray(layout.bones, dtype=np.int64).reshape(-1, 2)
        self.mirror = mirror_order(layout, cfg, str(dataset.path))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices) * self.copies * self.views * self.flips

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        rng, view = None, 0
        if self.train:
            copy, position = divmod(k, len(self.indices))
            epoch = 0 if self.cfg.frozen_augmentation else self.epoch
            rng = np.random.default_rng([self.seed, epoch, copy, int(self.indices[position])])
        flipped = False
        if not self.train:
            position, view = divmod(k, self.views * self.flips)
            flipped, view = view >= self.views, view % self.views
        clip_index = int(self.indices[position])
        x = self.transform(clip_index, rng, view, flipped)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), int(self.dataset.labels[clip_index])

    def transform(self, clip_index: int, rng: np.random.Generator | None, view: int = 0,
                  flipped: bool = False) -> np.ndarray:
        ds = self.dataset
        size = None
        if self.cfg.normalize == "image":
            size = (float(ds.meta("width")[clip_index]), float(ds.meta("height")[clip_index]))
        return transform_clip(ds.clip(clip_index), ds.clip_confidence(clip_index), self.cfg, self.bones, rng, size,
                              view, self.views, self.mirror, flipped)


def transform_clip(clip: np.ndarray, confidence: np.ndarray | None, cfg: DataConfig, bones: np.ndarray,
                   rng: np.random.Generator | None, image_size: tuple[float, float] | None = None,
                   view: int = 0, views: int = 1, mirror_joints: Sequence[int] = (),
                   flipped: bool = False) -> np.ndarray:
    """[L, M, J, C] raw clip -> [T, P*J', C'] model input; rng None = evaluation (deterministic, view
    number `view` of `views` temporal views, mirrored if `flipped`). Shared by training, evaluation
    and `cascade predict`, so a checkpoint sees new inputs exactly as it saw its test split.
    mirror_joints: the layout's mirror permutation, needed with data.flip or flipped."""
    if confidence is not None and cfg.invisible == "zero":
        clip = np.where((confidence > cfg.min_confidence)[..., None], clip, 0.0).astype(np.float32)
    # The coin comes from a child generator: the clip's own random stream (crops, scales) is the same
    # flipped or not, and recipes without flipping keep theirs.
    if flipped or (rng is not None and cfg.flip > 0 and rng.spawn(1)[0].random() < cfg.flip):
        clip = mirror(clip, mirror_joints)
    x = select_persons(clip, cfg.person)  # (L, P, J, C)
    if cfg.center_joint >= 0:
        x = center(x, cfg.center_joint)
    if rng is not None:
        x = augment(x, cfg, rng)
    if cfg.normalize != "none":
        x = normalize(x, cfg.normalize, image_size)
    if cfg.frames > 0:
        x = sample_frames(x, cfg, rng, view, views)  # (frames, P, J, C)
    if rng is not None:
        x = drop_parts(x, cfg, rng)
    x = represent(x, cfg.representation, bones, cfg.bone_param_clamp)  # (T, P, J', C')
    return x.reshape(len(x), -1, x.shape[-1])  # (T, P*J', C')


class Batch(NamedTuple):
    x: torch.Tensor  # (B, T_max, J, C), zeros after each clip's length
    lengths: torch.Tensor  # (B,) long
    labels: torch.Tensor  # (B,) long


def collate_clips(items: Sequence[tuple[torch.Tensor, int]]) -> Batch:
    clips, labels = zip(*items)
    return Batch(x=pad_sequence(list(clips), batch_first=True),
                 lengths=torch.tensor([len(c) for c in clips], dtype=torch.long),
                 labels=torch.tensor(labels, dtype=torch.long))
