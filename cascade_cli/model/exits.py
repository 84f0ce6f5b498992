"""Early-exit heads: light classifiers on T1's tokens, so a clip T1 already knows need not pay for
T2, the fusion and the main head (reference early_exit.md).

    tokens of T1 (B, T, d) -> masked mean over real frames (B, d) -> LayerNorm -> Linear -> logits (B, K)

A classifier holds its exit heads in `model.exits` (a ModuleDict; key "t1" for the exit after T1),
so they travel in its checkpoint under `exits.<name>.`; a classifier without them is unchanged.
"""

from __future__ import annotations

from torch import Tensor, nn

from cascade_cli.model.cascadeformer import CascadeFormer, masked_mean

EXIT_AFTER_T1 = "t1"


class ExitHead(nn.Module):
    def __init__(self, d_model: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, num_classes)

    def forward(self, tokens: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """(B, T, d) tokens -> (B, K) logits."""
        return self.fc(self.norm(masked_mean(tokens, pad_mask)))


def add_exits(model: CascadeFormer, names: tuple[str, ...] = (EXIT_AFTER_T1,)) -> CascadeFormer:
    """Give `model` fresh exit heads (the same classes as its main head)."""
    d_model, num_classes = model.t1.pos_embedding.shape[-1], _num_classes(model)
    model.exits = nn.ModuleDict({name: ExitHead(d_model, num_classes) for name in names})
    return model


def _num_classes(model: CascadeFormer) -> int:
    last = [m for m in model.head.modules() if isinstance(m, nn.Linear)][-1]
    return last.out_features
