"""The transformer encoder stack shared by T1, T2 and the 1.2 spatial transformer.

The official code builds every encoder from ``nn.TransformerEncoderLayer`` with PyTorch defaults:
post-norm, ReLU, LayerNorm eps 1e-5, batch_first. We keep exactly those layers so the released
weights load unchanged (``layers.N.self_attn.in_proj_weight`` ...) and give the same numbers. The
stack is a bare ModuleList rather than ``nn.TransformerEncoder``: there is no final norm to add, and
skipping its nested-tensor path keeps the outputs at padded frames finite and the code path the
same in train and eval.
"""

from __future__ import annotations

from torch import Tensor, nn


def check_heads(width: int, heads: int, keys: str) -> None:
    """Fail at build time, naming the config keys, instead of deep inside nn.MultiheadAttention."""
    if heads < 1 or width % heads:
        raise ValueError(f"{keys}: attention width {width} is not divisible by {heads} heads")


class Encoder(nn.Module):
    def __init__(self, width: int, heads: int, num_layers: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, ffn_dim, dropout, batch_first=True)
            for _ in range(num_layers)
        )

    def forward(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """x (B, N, w); pad_mask (B, N) bool, True = padding, hidden from every key."""
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=pad_mask)
        return x
