"""A real cascade at inference: clips whose exit head after T1 is confident enough leave there, and
only the others run T2, the fusion and the main head, on a batch compacted to them.

A clip leaves when its exit's confidence reaches the threshold. Two rules measure confidence:
`max_softmax`, the top probability, and `entropy`, one minus the entropy of the probabilities over
its maximum log K (1: all mass on one class, 0: uniform), which also counts how the rest of the mass
is spread. The clips that stay get the full model's logits (T1 runs once for both), so their
predictions are the full model's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cascade_cli.config import EXIT_RULES
from cascade_cli.errors import UserError
from cascade_cli.model.exits import EXIT_AFTER_T1


def exit_confidence(logits: Tensor, rule: str = "max_softmax") -> Tensor:
    """(B, K) exit logits -> (B,) confidence in [0, 1] under `rule` (see the module's docstring)."""
    p = logits.float().softmax(dim=-1)
    if rule == "max_softmax":
        return p.max(dim=-1).values
    if rule == "entropy":
        entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=-1)
        return 1.0 - entropy / math.log(p.shape[-1])
    raise UserError(f"exit rule '{rule}': use one of {', '.join(EXIT_RULES)}")


def require_exit_head(classifier) -> None:
    """A clear error for a checkpoint without the exit head the cascade needs."""
    if EXIT_AFTER_T1 not in getattr(classifier.model, "exits", {}):
        raise UserError(f"{classifier.path}: this checkpoint has no exit head; fit one first with "
                        "`cascade exits fit CHECKPOINT --out FILE`")


@torch.no_grad()
def cascade_forward(model, x: Tensor, pad_mask: Tensor | None, threshold: float,
                    rule: str = "max_softmax") -> tuple[Tensor, Tensor, Tensor]:
    """(B, T, J, C) clips -> (B, K) logits, (B, d) pooled features (the main head's input; NaN where
    the clip left, as they were never computed) and (B,) bool, True where the clip left at the exit
    after T1. threshold > 1 never exits: the full model for every clip."""
    tokens = model.t1(x, pad_mask)  # (B, T, d)
    early = model.exits[EXIT_AFTER_T1](tokens, pad_mask).float()  # (B, K)
    leave = exit_confidence(early, rule) >= threshold
    logits = early.clone()
    pooled = torch.full((len(x), tokens.shape[-1]), float("nan"), device=x.device)
    stay = (~leave).nonzero(as_tuple=True)[0]
    if len(stay):  # compaction: only the clips that stay pay for T2, the fusion and the head
        kept_pad = None if pad_mask is None else pad_mask[stay]
        pooled[stay] = model.pool(tokens[stay], kept_pad).float()  # (S, d)
        logits[stay] = model.head(pooled[stay]).float()
    return logits, pooled, leave
