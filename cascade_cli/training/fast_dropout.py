"""Dropout with a cheaper random mask on CPU, for the dropout layers and inside attention.

PyTorch's CPU dropout draws one Mersenne-Twister number per element (bernoulli_), which costs
up to a quarter of a CascadeFormer training step, and with attention dropout its fused CPU
attention kernel gives way to a slower materialising path. Here one 64-bit draw decides four
elements (its four 16-bit slices), about a third of the cost. The probability is quantised to
1/65536 (p=0.1 drops with 6554/65536 = 0.100006) and kept values are scaled by 1/(1 - that
probability), so outputs stay unbiased. The draws come from torch's global generator, so a seed
fixes them. On GPUs, and in eval mode, PyTorch's own modules run unchanged.

The model builders make plain PyTorch modules; the trainer swaps their classes when the config key
`fast_cpu_dropout` is true (the default) and it trains on a CPU, so what a model file shows is
what runs everywhere else.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = 1 << 16


def drop_mask(shape: torch.Size, p: float) -> Tensor:
    """A CPU bool mask of `shape`, each element True with probability round(p * 65536) / 65536."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # every 64-bit value
    slices = words.view(torch.int16)[:n].view(shape)  # uniform over [-32768, 32767]
    return slices < round(p * _LEVELS) - _LEVELS // 2


def dropout(x: Tensor, p: float) -> Tensor:
    """Training-mode dropout of a CPU tensor with the cheaper mask."""
    if p == 1.0:
        return x * 0.0
    kept = 1.0 - round(p * _LEVELS) / _LEVELS
    return x.masked_fill(drop_mask(x.shape, p), 0.0).mul_(1.0 / kept)


class Dropout(nn.Dropout):
    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        return dropout(x, self.p)


class MultiheadAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention whose CPU training forward drops attention weights with the cheaper
    mask. PyTorch's fused CPU attention kernel has no dropout, so with dropout it falls back to
    materialising the (B, heads, T, S) weights anyway; on long clips that path, and its
    per-element draw, dominate the step. Everywhere else (eval, GPU, no dropout) the parent's
    fused path runs unchanged."""

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        ours = (self.training and self.dropout > 0.0 and query.device.type == "cpu" and self.batch_first
                and not need_weights and attn_mask is None and not is_causal and self._qkv_same_embed_dim
                and self.bias_k is None and self.in_proj_bias is not None and key is value)
        if not ours:
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                   attn_mask=attn_mask, average_attn_weights=average_attn_weights,
                                   is_causal=is_causal)
        B, T, d = query.shape
        S, H = key.shape[1], self.num_heads
        w_q, w_kv = self.in_proj_weight.split([d, 2 * d])
        b_q, b_kv = self.in_proj_bias.split([d, 2 * d])
        q = F.linear(query, w_q, b_q).view(B, T, H, d // H).transpose(1, 2)  # (B, H, T, dh)
        k, v = F.linear(key, w_kv, b_kv).view(B, S, 2, H, d // H).permute(2, 0, 3, 1, 4)  # (B, H, S, dh) each
        scores = (q * (d // H) ** -0.5) @ k.transpose(-2, -1)  # (B, H, T, S)
        if key_padding_mask is not None and key_padding_mask.dtype == torch.bool:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        elif key_padding_mask is not None:  # additive, as nn.TransformerEncoderLayer passes it (0 / -inf)
            scores = scores + key_padding_mask[:, None, None, :].to(scores.dtype)
        weights = dropout(scores.softmax(-1), self.dropout)
        out = (weights @ v).transpose(1, 2).reshape(B, T, d)  # (B, T, d)
        return self.out_proj(out), None


def use_fast_dropout(module: nn.Module) -> nn.Module:
    """Give every nn.Dropout and nn.MultiheadAttention inside `module` the cheaper CPU dropout.
    Only the class changes (same p, same parameters and names), so checkpoints are unaffected."""
    for child in module.modules():
        if type(child) is nn.Dropout:
            child.__class__ = Dropout
        elif type(child) is nn.MultiheadAttention:
            child.__class__ = MultiheadAttention
    return module
