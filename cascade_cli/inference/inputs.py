"""Raw skeleton files as model inputs, through the checkpoint's own preprocessing.

Inputs, each one clip unless said otherwise:

    .skeleton   an NTU RGB+D file: parsed, denoised and centred exactly as `cascade prepare ntu60` does
    .npy        (T, J, C) one clip, or (B, T, J, C) a batch of clips (C may carry a confidence channel)
    .npz        `data` as .npy, optional `lengths` (B,) for padded batches
    .json       N-UCLA style {"skeletons": [T][J][C]}, {"data": ...}, or a bare [T][J][C] list

A clip then goes through `transform_clip` with the checkpoint's data settings, the same function
that produced its test-split inputs; `raw=True` skips it, for debugging and parity checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cascade_cli.data.pipeline import mirror_order, resolve_center, transform_clip
from cascade_cli.data.prepare import Rejected
from cascade_cli.data.readers import as_float, load_json
from cascade_cli.data.registry import NTU60
from cascade_cli.data.representation import output_shape
from cascade_cli.errors import UserError
from cascade_cli.inference.classifier import Classifier
from cascade_cli.layouts import Layout

SUFFIXES = (".skeleton", ".npy", ".npz", ".json")


@dataclass
class InputClip:
    source: str  # file, with #index for clips of a batch file
    frames: np.ndarray  # (T, M, J, C) float32
    confidence: np.ndarray | None  # (T, M, J)


def _split_confidence(data: np.ndarray, coords: int) -> tuple[np.ndarray, np.ndarray | None]:
    if data.shape[-1] == coords + 1:
        return data[..., :coords], data[..., coords]
    return data, None


def read_inputs(path: Path, coords: int) -> list[InputClip]:
    """All clips in one input file, as (T, M, J, C); `coords` tells a confidence channel apart."""
    if not path.is_file():
        raise UserError(f"{path}: no such input file")
    try:
        if path.suffix == ".skeleton":  # NTU RGB+D's own format, in the registry's NTU joint order
            from cascade_cli.data.ntu import denoise, parse_skeleton, translate

            joints, layout = translate(denoise(parse_skeleton(path))[0]), NTU60.layout
            frames = joints.reshape(len(joints), -1, layout.num_joints, layout.coords).astype(np.float32)
            return [InputClip(str(path), frames, None)]
        if path.suffix == ".json":
            content = load_json(path)
            data = content.get("skeletons", content.get("data")) if isinstance(content, dict) else content
            batch, lengths = as_float(data, f"{path.name} skeletons")[None], None
        elif path.suffix in (".npy", ".npz"):
            loaded = np.load(path, allow_pickle=False)
            if path.suffix == ".npy":
                arrays = {"data": loaded}
            else:
                with loaded:
                    arrays = dict(loaded)
            if "data" not in arrays:
                raise UserError(f"{path}: a .npz input needs an array named 'data' (and optionally 'lengths')")
            batch = as_float(arrays["data"], f"{path.name} data")
            lengths = arrays.get("lengths")
            if batch.ndim == 3:  # one clip (T, J, C)
                batch, lengths = batch[None], None
        else:
            raise UserError(f"{path}: unsupported input type '{path.suffix}'; use {', '.join(SUFFIXES)}")
    except Rejected as exc:
        raise UserError(f"{path}: {exc}") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot be read ({exc})") from None
    if batch.ndim == 4:  # (B, T, J, C): one person per clip
        batch = batch[:, :, None]
    if batch.ndim != 5 or batch.shape[1] < 1:
        raise UserError(f"{path}: array of shape {batch.shape}; expected (T, J, C), (B, T, J, C) or a .npz "
                        "'data' of (B, T, [M,] J, C)")
    clips = []
    for i, clip in enumerate(batch):
        T = int(lengths[i]) if lengths is not None else len(clip)
        frames, confidence = _split_confidence(clip[:T].astype(np.float32), coords)
        name = str(path) if len(batch) == 1 else f"{path}#{i}"
        if not np.isfinite(frames).all():
            raise UserError(f"{name}: contains NaN or inf coordinates")
        clips.append(InputClip(name, frames, confidence))
    return clips


def _check_layout(clip: InputClip, layout: Layout) -> None:
    J, C = clip.frames.shape[2:]
    if (J, C) != (layout.num_joints, layout.coords):
        raise UserError(f"{clip.source}: {J} joints x {C} coordinates, but the checkpoint expects layout "
                        f"{layout.name} with {layout.num_joints} joints x {layout.coords} coordinates")


def model_input(clip: InputClip, classifier: Classifier, *, raw: bool = False,
                image_size: tuple[float, float] | None = None, view: int = 0, views: int = 1,
                without_confidence: bool = False, flipped: bool = False) -> torch.Tensor:
    """One clip -> (T, J', C') float32 model input, as the checkpoint's test split was fed.

    A clip without the confidence channel the model's pipeline uses (Penn Action's visibility) is
    refused rather than silently preprocessed another way; without_confidence=True accepts it, every
    joint then counting as visible."""
    cfg, layout = classifier.config, classifier.layout
    J_in, C_in = classifier.input_shape
    if raw:
        x = clip.frames.reshape(len(clip.frames), -1, clip.frames.shape[-1])
        if x.shape[1:] != (J_in, C_in):
            raise UserError(f"{clip.source}: --raw input frames are {x.shape[1]} x {x.shape[2]}, the model "
                            f"takes {J_in} x {C_in}")
    else:
        if cfg.data.normalize == "image" and image_size is None:
            raise UserError(f"{classifier.path}: this model normalises by image size; pass --image-size WIDTH HEIGHT")
        _check_layout(clip, layout)
        if clip.confidence is None and classifier.zeroes_invisible_joints and not without_confidence:
            channels = f"{layout.coords} + 1"
            raise UserError(f"{clip.source}: no per-joint confidence channel, but the model zeroes joints whose "
                            f"confidence is <= {cfg.data.min_confidence} (data.invisible=zero, trained on "
                            f"{classifier.meta.get('dataset')}); give {channels} values per joint with the confidence "
                            "(Penn Action: visibility 0/1) last, or pass --without-confidence to count every "
                            "joint as visible")
        # The model saw `persons` people side by side when trained with data.person=both.
        persons = J_in // output_shape(cfg.data.representation, layout.num_joints, len(layout.bones), layout.coords)[0]
        frames, confidence = clip.frames, clip.confidence
        if persons > 1 and frames.shape[1] < persons:  # absent people are zeros, as in prepared data
            pad = ((0, 0), (0, persons - frames.shape[1]), (0, 0), (0, 0))
            frames = np.pad(frames, pad)
            confidence = None if confidence is None else np.pad(confidence, pad[:3])
        frames = frames[:, :max(persons, 1)] if cfg.data.person == "both" else frames
        bones = np.asarray(layout.bones, dtype=np.int64).reshape(-1, 2)
        data_cfg = resolve_center(cfg.data, layout, str(classifier.path))
        x = transform_clip(frames, confidence, data_cfg, bones, None, image_size, view, views,
                           mirror_order(layout, cfg.data, str(classifier.path)), flipped)
    if len(x) > cfg.model.max_frames:
        raise UserError(f"{clip.source}: {len(x)} frames, longer than the model's {cfg.model.max_frames}")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
