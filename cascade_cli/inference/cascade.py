"""A real cascade at inference: clips whose exit head after T1 is confident enough leave there, and
only the others run T2, the fusion and the main head, on a batch compacted to them.

Rule `max_softmax`: a clip leaves when its exit's top probability reaches the threshold. The
clips that stay get the full model's logits (T1 runs once for both), so their predictions are the
full model's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cascade_cli.errors import UserError
from cascade_cli.model.exits import EXIT_AFTER_T1


def require_exit_head(classifier) -> None:
    """A clear error for a checkpoint without the exit head the cascade needs."""
    if EXIT_AFTER_T1 not in getattr(classifier.model, "exits", {}):
        raise UserError(f"{classifier.path}: this checkpoint has no exit head; fit one first with "
                        "`cascade exits fit CHECKPOINT --out FILE`")


@torch.no_grad()
def cascade_forward(model, x: Tensor, pad_mask: Tensor | None, threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """(B, T, J, C) clips -> (B, K) logits, (B, d) pooled features (the main head's input; NaN where
    the clip left, as they were never computed) and (B,) bool, True where the clip left at the exit
    after T1. threshold > 1 never exits: the full model for every clip."""
    tokens = model.t1(x, pad_mask)  # (B, T, d)
    early = model.exits[EXIT_AFTER_T1](tokens, pad_mask).float()  # (B, K)
    leave = early.softmax(dim=-1).max(dim=-1).values >= threshold
    logits = early.clone()
    pooled = torch.full((len(x), tokens.shape[-1]), float("nan"), device=x.device)
    stay = (~leave).nonzero(as_tuple=True)[0]
    if len(stay):  # compaction: only the clips that stay pay for T2, the fusion and the head
        kept_pad = None if pad_mask is None else pad_mask[stay]
        pooled[stay] = model.pool(tokens[stay], kept_pad).float()  # (S, d)
        logits[stay] = model.head(pooled[stay]).float()
    return logits, pooled, leave
