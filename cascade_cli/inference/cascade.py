"""A real cascade at inference: a clip leaves at the first exit head that is sure enough of it, and
only the clips that stay run the layers after that exit, on a batch compacted to them.

Three rules say when a clip leaves (reference early_exit.md):
- `max_softmax`: the exit's top probability reaches the threshold;
- `entropy`: one minus the entropy of the exit's probabilities over its maximum log K reaches the
  threshold (1: all mass on one class, 0: uniform), which also counts how the rest of the mass is spread;
- `patience` (PABEE): the last p exits, this one included, predict the same class; the threshold is p.
The clips that stay get the full model's logits, so their predictions are the full model's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cascade_cli.config import EXIT_RULES
from cascade_cli.errors import UserError
from cascade_cli.inference.backend import as_backend

FINAL = "final"  # where a clip that took no exit leaves: the main head


def exit_confidence(logits: Tensor, rule: str = "max_softmax") -> Tensor:
    """(B, K) exit logits -> (B,) confidence in [0, 1] under a confidence rule (see the docstring)."""
    p = logits.float().softmax(dim=-1)
    if rule == "max_softmax":
        return p.max(dim=-1).values
    if rule == "entropy":
        entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=-1)
        return 1.0 - entropy / math.log(p.shape[-1])
    raise UserError(f"exit rule '{rule}': use one of {', '.join(EXIT_RULES)}")


def check_rule(rule: str, threshold: float | None = None) -> None:
    """An unknown rule, or a patience that is not a whole number of exits, fails before any work."""
    if rule not in EXIT_RULES:
        raise UserError(f"exit rule '{rule}': use one of {', '.join(EXIT_RULES)}")
    if rule == "patience" and threshold is not None and (threshold < 1 or threshold != int(threshold)):
        raise UserError(f"--early-exit {threshold:g} with --rule patience: the number of consecutive exits that "
                        "must agree, a whole number of at least 1")


class LeaveRule:
    """Decides, exit after exit, which clips of a batch of `size` leave (model.exits.LeaveRule), and
    records where each left: `left_at`, the index of its exit in the order met, -1 for none.
    Patience keeps, per clip, the class its last exit predicted and how many exits in a row agreed."""

    def __init__(self, rule: str, threshold: float, size: int, device: torch.device | str = "cpu"):
        check_rule(rule, threshold)
        self.rule, self.threshold, self.exits_met = rule, threshold, 0
        self.left_at = torch.full((size,), -1, dtype=torch.long, device=device)
        if rule == "patience":
            self.last = torch.full((size,), -1, dtype=torch.long, device=device)
            self.streak = torch.zeros(size, dtype=torch.long, device=device)

    def __call__(self, name: str, logits: Tensor, clips: Tensor) -> Tensor:
        if self.rule == "patience":
            predicted = logits.argmax(dim=-1)
            self.streak[clips] = torch.where(predicted == self.last[clips], self.streak[clips] + 1, 1)
            self.last[clips] = predicted
            leave = self.streak[clips] >= self.threshold
        else:
            leave = exit_confidence(logits, self.rule) >= self.threshold
        self.left_at[clips[leave]] = self.exits_met
        self.exits_met += 1
        return leave


def require_exit_head(classifier) -> None:
    """A clear error for a checkpoint without the exit heads the cascade needs."""
    if not classifier.backend.exits:
        raise UserError(f"{classifier.path}: this checkpoint has no exit head; fit one first with "
                        "`cascade exits fit CHECKPOINT --out FILE`")


def exit_places(model) -> list[str]:
    """Where a clip can leave: the exits of a model (or inference backend) in order, then FINAL."""
    return [*as_backend(model).exits, FINAL]


@torch.no_grad()
def cascade_forward(model, x: Tensor, pad_mask: Tensor | None, threshold: float,
                    rule: str = "max_softmax") -> tuple[Tensor, Tensor, Tensor]:
    """(B, T, J, C) clips through a model with exit heads, or an inference backend (PyTorch or
    ONNX Runtime, inference.backend) -> (B, K) logits, (B, d) pooled features (the main head's
    input; NaN where the clip left, as they were never computed) and (B,) long, the index in
    exit_places(model) of where each clip left. A threshold no exit can reach (above 1; for
    patience, more than the exits) runs the full model for every clip."""
    backend = as_backend(model)
    rule = LeaveRule(rule, threshold, len(x), x.device)
    out = backend.cascade(x, pad_mask, rule)
    places = exit_places(backend)
    left_at = torch.where(rule.left_at < 0, len(places) - 1, rule.left_at)
    logits = torch.empty_like(out.exits[places[0]])  # (B, K)
    for k, name in enumerate(places[:-1]):
        if name in out.exits:  # an exit no clip reached had no clip leave at it
            here = left_at == k
            logits[here] = out.exits[name][here]
    logits[out.stayed] = out.logits.float()
    pooled = torch.full((len(x), out.pooled.shape[-1]), float("nan"), device=x.device)
    pooled[out.stayed] = out.pooled.float()
    return logits, pooled, left_at
