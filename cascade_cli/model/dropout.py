"""Dropout with a cheaper random mask on CPU.

PyTorch's CPU dropout draws one Mersenne-Twister number per element (bernoulli_), which on a
CPU costs as much as a quarter of a CascadeFormer training step. Here one 64-bit draw gives the
keep/drop decision for four elements (its four 16-bit slices), so the mask costs about a third as
much. The probability is quantised to 1/65536 (p=0.1 drops with 6554/65536 = 0.100006) and the
kept values are scaled by 1/(1 - that probability), so the output stays unbiased. The draws come
from torch's global generator, so a seed fixes them. On other devices nn.Dropout is already fast
and is used unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

_LEVELS = 1 << 16


def drop_mask(shape: torch.Size, p: float) -> Tensor:
    """A CPU bool mask of `shape`, each element True with probability round(p * 65536) / 65536."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # every 64-bit value
    slices = words.view(torch.int16)[:n].view(shape)  # uniform over [-32768, 32767]
    return slices < round(p * _LEVELS) - _LEVELS // 2


class Dropout(nn.Dropout):
    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        if self.p == 1.0:
            return x * 0.0
        kept = 1.0 - round(self.p * _LEVELS) / _LEVELS
        return x.masked_fill(drop_mask(x.shape, self.p), 0.0).mul_(1.0 / kept)


def use_fast_dropout(module: nn.Module) -> nn.Module:
    """Swap every nn.Dropout inside `module` for Dropout (same p; no parameters, so checkpoints
    and module names are unchanged)."""
    for name, child in module.named_children():
        if type(child) is nn.Dropout:
            setattr(module, name, Dropout(child.p, child.inplace))
        else:
            use_fast_dropout(child)
    return module
