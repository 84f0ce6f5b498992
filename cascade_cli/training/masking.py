"""The masked-pretraining objective: hide some joint coordinates, score their reconstruction.

Strategies (reference B.5, paper Table 7):
    joint_slots  n = max(1, int(ratio*L*J)) random (frame, joint) slots per clip; the official masking
    joints       n = max(1, int(ratio*J)) joints hidden in every frame; the paper's wording
    frames       n = max(1, int(ratio*L)) whole frames
    none         nothing hidden, every slot scored: plain reconstruction

L is the clip's own number of real frames: padded frames are never hidden nor scored (unlike the
official code, which draws over the padded length and reconstructs the padding as zeros).

Random numbers are drawn on the CPU from `generator`, whatever the device of the batch, so a seed
gives the same mask on CPU and CUDA (their generators differ); the masks are then moved to the
device of `lengths`. Fixed validation masks are a seeded generator away.
"""

from __future__ import annotations

import torch
from torch import Tensor

STRATEGIES = ("joint_slots", "joints", "frames", "none")


def _pick(keys: Tensor, eligible: Tensor, count: Tensor) -> Tensor:
    """Per row, True at the `count` eligible positions with the smallest random keys.
    keys, eligible (B, N); count (B, 1) -> (B, N) bool, without a Python loop over rows."""
    rank = keys.masked_fill(~eligible, float("inf")).argsort(1).argsort(1)  # (B, N), 0 = smallest key
    return (rank < count) & eligible


def draw_mask(strategy: str, ratio: float, lengths: Tensor, T: int, J: int,
              generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """lengths (B,) -> (hidden, scored), each (B, T, J) bool. `generator` must be a CPU generator
    (None uses the global CPU RNG)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"pretrain.mask: unknown strategy {strategy!r}; use {', '.join(STRATEGIES)}")
    L = lengths.detach().cpu().long()[:, None]  # (B, 1)
    B = L.shape[0]
    valid_frames = torch.arange(T) < L  # (B, T)
    valid = valid_frames[..., None].expand(B, T, J)  # (B, T, J)
    # Counts in float64 and in this order reproduce Python's int(ratio * L * J) exactly.
    if strategy == "joint_slots":
        count = (ratio * L.double() * J).long().clamp(min=1)
        keys = torch.rand(B, T * J, generator=generator)
        hidden = _pick(keys, valid.reshape(B, T * J), count).reshape(B, T, J)
    elif strategy == "joints":
        count = torch.full((B, 1), max(1, int(ratio * J)))
        chosen = _pick(torch.rand(B, J, generator=generator), torch.ones(B, J, dtype=torch.bool), count)
        hidden = valid & chosen[:, None, :]
    elif strategy == "frames":
        count = (ratio * L.double()).long().clamp(min=1)
        hidden = _pick(torch.rand(B, T, generator=generator), valid_frames, count)[..., None].expand(B, T, J)
    else:
        hidden = torch.zeros(B, T, J, dtype=torch.bool)
    scored = valid if strategy == "none" else hidden
    return hidden.contiguous().to(lengths.device), scored.contiguous().to(lengths.device)


def apply_mask(x: Tensor, hidden: Tensor) -> Tensor:
    """x (B, T, J, C) with all C coordinates of hidden slots set to 0, as the official code does."""
    return x.masked_fill(hidden[..., None], 0.0)


def masked_mse(recon: Tensor, target: Tensor, scored: Tensor) -> Tensor:
    """Mean squared error over the scored coordinates, pooled over the whole batch (the official
    normalisation: a clip with more scored slots weighs more). recon, target (B, T, J, C); scored
    (B, T, J). With nothing scored the loss is 0 and still connected to the graph."""
    weight = scored[..., None].to(torch.float32)  # (B, T, J, 1)
    squared = (recon.float() - target.float()).square() * weight
    return squared.sum() / (weight.sum() * recon.shape[-1]).clamp(min=1)
