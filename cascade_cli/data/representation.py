"""Per-frame input representations of paper Table 8: joints, or bones built from the layout's pairs.

Bones are (child, parent) pairs of the layout, so every dataset gets every representation (the
official code hard-codes Penn's pairs and copies concatenation for N-UCLA's "parameterization").
Joints that were zeroed (invisible, dropped) are zeroed before bones are built and their bones kept,
as in the official code.

    joints        (T, J, C)                       positions
    bone_sub      (T, B, C)                       child - parent
    bone_concat   (T, 2B, C)                      child and parent as two pseudo-joints, bone-major
    bone_param    (T, B, 2(C-1))                  per non-x axis k: slope m_k = dk/dx, intercept
                                                  n_k = child_k - m_k * child_x (2-D: m, n)
    joint_motion  (T, J, C)                       x[t+1] - x[t], zero at the last frame
    bone_motion   (T, B, C)                       the same of bone_sub

The motion streams are the field's third and fourth input streams (after joints and bones), which
multi-stream ensembles fuse. As in the field's code they are plain differences of consecutive frames
of the clip as the model sees it (after sampling), the last frame's set to zero so that a clip keeps
its length, and no frame of another clip or of padding enters them.
"""

from __future__ import annotations

import numpy as np

SLOPE_LIMIT, INTERCEPT_LIMIT, MIN_DX = 10.0, 1000.0, 1e-6


def output_shape(representation: str, num_joints: int, num_bones: int, coords: int) -> tuple[int, int]:
    """(joints, channels) per person that `represent` produces."""
    return {"joints": (num_joints, coords), "bone_sub": (num_bones, coords),
            "bone_concat": (2 * num_bones, coords), "bone_param": (num_bones, 2 * (coords - 1)),
            "joint_motion": (num_joints, coords), "bone_motion": (num_bones, coords)}[representation]


def bone_parameters(child: np.ndarray, parent: np.ndarray, clamp: str) -> np.ndarray:
    """Slope/intercept of the line through both ends, in the x-k plane of every other axis k.

    clamp="sign" keeps dx's sign with |dx| >= 1e-6 (sign(0) = +1); "official" reproduces
    clamp(dx, min=1e-6), which maps every negative dx to 1e-6 and so loses the slope's sign.
    """
    dx = parent[..., 0] - child[..., 0]
    if clamp == "official":
        dx = np.maximum(dx, MIN_DX)
    else:
        dx = np.where(dx >= 0, 1.0, -1.0) * np.maximum(np.abs(dx), MIN_DX)
    out = []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for k in range(1, child.shape[-1]):
            slope = np.nan_to_num((parent[..., k] - child[..., k]) / dx, nan=0.0, posinf=0.0, neginf=0.0)
            slope = np.clip(slope, -SLOPE_LIMIT, SLOPE_LIMIT)
            intercept = np.nan_to_num(child[..., k] - slope * child[..., 0], nan=0.0, posinf=0.0, neginf=0.0)
            out += [slope, np.clip(intercept, -INTERCEPT_LIMIT, INTERCEPT_LIMIT)]
    return np.stack(out, axis=-1).astype(np.float32)


def motion(x: np.ndarray) -> np.ndarray:
    """(T, ...) -> (T, ...): x[t+1] - x[t], and zero at the last frame."""
    moved = np.zeros_like(x)
    moved[:-1] = x[1:] - x[:-1]
    return moved


def represent(x: np.ndarray, representation: str, bones: np.ndarray, clamp: str = "sign") -> np.ndarray:
    """x (T, ..., J, C) joints -> (T, ..., J', C') in the chosen representation; bones (B, 2) child, parent."""
    if representation == "joints":
        return x
    if representation == "joint_motion":
        return motion(x)
    child, parent = x[..., bones[:, 0], :], x[..., bones[:, 1], :]  # (T, ..., B, C)
    if representation == "bone_sub":
        return child - parent
    if representation == "bone_motion":
        return motion(child - parent)
    if representation == "bone_concat":
        return np.stack([child, parent], axis=-2).reshape(*x.shape[:-2], 2 * len(bones), x.shape[-1])
    if representation == "bone_param":
        return bone_parameters(child, parent, clamp)
    raise ValueError(f"data.representation: unknown {representation!r}")
