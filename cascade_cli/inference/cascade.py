"""A real cascade at inference: clips whose exit head after T1 is confident enough leave there, and
only the others run T2, the fusion and the main head, on a batch compacted to them.

Rule `max_softmax`: a clip leaves when its exit's top probability reaches the threshold. The
clips that stay get the full model's logits (T1 runs once for both), so their predictions are the
full model's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cascade_cli.model.exits import EXIT_AFTER_T1


@torch.no_grad()
def cascade_logits(model, x: Tensor, pad_mask: Tensor | None, threshold: float) -> tuple[Tensor, Tensor]:
    """(B, T, J, C) clips -> (B, K) logits and (B,) bool, True where the clip left at the exit after T1.
    threshold > 1 never exits: the full model for every clip."""
    tokens = model.t1(x, pad_mask)  # (B, T, d)
    early = model.exits[EXIT_AFTER_T1](tokens, pad_mask).float()  # (B, K)
    leave = early.softmax(dim=-1).max(dim=-1).values >= threshold
    logits = early.clone()
    stay = (~leave).nonzero(as_tuple=True)[0]
    if len(stay):  # compaction: only the clips that stay pay for T2, the fusion and the head
        kept_pad = None if pad_mask is None else pad_mask[stay]
        logits[stay] = model.head(model.pool(tokens[stay], kept_pad)).float()
    return logits, leave
