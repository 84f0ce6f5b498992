"""Early-exit heads: light classifiers on the tokens of an encoder layer, so a clip the model already
knows need not pay for the layers after it (reference early_exit.md).

    tokens after a layer (B, T, d) -> masked mean over real frames (B, d) -> LayerNorm -> Linear -> (B, K)

Exits are named by where they sit: "t1" after the whole of T1 (the exit of choice: about half the
classifier's compute lies after it), and, DeeBERT-style, "t1_layer{i}" after T1's earlier layers and
"t2_layer{i}" after T2's layers (1-based). A classifier holds its exit heads in `model.exits`, so they
travel in its checkpoint under `exits.<name>.`; a classifier without them is unchanged.

`ExitHeads.run` is the one layer-by-layer forward of a classifier with exits: training reads every
exit's logits from it, and the inference cascade (inference/cascade.py) lets clips leave at an exit,
compacting the batch so that only the clips that stay pay for what follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from cascade_cli.config import EXIT_PLACES
from cascade_cli.model.cascadeformer import CascadeFormer, masked_mean

EXIT_AFTER_T1 = "t1"


def exit_name(stage: str, layer: int, num_layers: int) -> str:
    """The exit after encoder layer `layer` (1-based) of T1 or T2 ("t1" or "t2")."""
    return EXIT_AFTER_T1 if (stage, layer) == ("t1", num_layers) else f"{stage}_layer{layer}"


def encoder_stages(model: CascadeFormer) -> tuple[tuple[str, nn.ModuleList], ...]:
    return ("t1", model.t1.transformer_encoder.layers), ("t2", model.t2.encoder.layers)


def exit_names(model: CascadeFormer, places: str = "t1") -> tuple[str, ...]:
    """The exits of `places` ("t1": after T1 only; "layers": after every encoder layer of T1 and T2),
    in the order a clip meets them."""
    if places not in EXIT_PLACES:
        raise ValueError(f"exits: {places!r}; use {' or '.join(EXIT_PLACES)}")
    every = tuple(exit_name(stage, i, len(layers)) for stage, layers in encoder_stages(model)
                  for i in range(1, len(layers) + 1))
    return every if places == "layers" else (EXIT_AFTER_T1,)


class ExitHead(nn.Module):
    def __init__(self, d_model: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, num_classes)

    def forward(self, tokens: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """(B, T, d) tokens -> (B, K) logits."""
        return self.classify(masked_mean(tokens, pad_mask))

    def classify(self, pooled: Tensor) -> Tensor:
        """(B, d) pooled tokens -> (B, K) logits: what post-hoc fitting trains on cached features."""
        return self.fc(self.norm(pooled))


class PooledTokens(nn.Module):
    """Stands in for an exit head to read the pooled tokens (B, d) at its place (post-hoc fitting)."""

    def forward(self, tokens: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        return masked_mean(tokens, pad_mask)


@dataclass
class CascadeOutput:
    logits: Tensor  # (S, K) the main head's logits of the S clips that stayed to the end
    pooled: Tensor  # (S, d) their pooled features, the main head's input
    stayed: Tensor  # (S,) their indices in the batch
    exits: dict[str, Tensor]  # exit name -> (B, K) float logits; NaN rows for clips gone before it


# (exit name, its logits (A, K), the A clips' indices in the batch) -> (A,) bool, True: leave here
LeaveRule = Callable[[str, Tensor, Tensor], Tensor]


class ExitHeads(nn.ModuleDict):
    def order(self, model: CascadeFormer) -> list[str]:
        """This model's exit names in the order a clip meets them."""
        return [name for name in exit_names(model, "layers") if name in self]

    def run(self, model: CascadeFormer, x: Tensor, pad_mask: Tensor | None = None,
            leave: LeaveRule | None = None) -> CascadeOutput:
        """x (B, T, J, C) through `model` layer by layer, each exit head reading the tokens after its
        layer. Without `leave` every clip runs to the end (the main path is exactly model(x)); with
        it, the clips it lets go leave the batch and nothing after that exit runs for them."""
        B = len(x)
        clips = torch.arange(B, device=x.device)
        exits: dict[str, Tensor] = {}
        tokens, pretrained = model.t1.embed_frames(x), None  # (B, T, d)
        for stage, layers in encoder_stages(model):
            if stage == "t2":
                pretrained = tokens  # T1's output, the fusion's query
            for i, layer in enumerate(layers, 1):
                tokens = layer(tokens, src_key_padding_mask=pad_mask)
                name = exit_name(stage, i, len(layers))
                if name not in self:
                    continue
                z = self[name](tokens, pad_mask).float()  # (A, K)
                exits[name] = z.new_full((B, z.shape[-1]), float("nan")).index_copy(0, clips, z)
                if leave is None:
                    continue
                keep = ~leave(name, z, clips)
                if keep.all():
                    continue
                tokens, clips = tokens[keep], clips[keep]
                pad_mask = None if pad_mask is None else pad_mask[keep]
                pretrained = None if pretrained is None else pretrained[keep]
                if not len(clips):  # everyone left: the rest of the model never runs
                    return CascadeOutput(z[:0], tokens.new_zeros(0, tokens.shape[-1]), clips, exits)
        pooled = model.fuse(pretrained, tokens, pad_mask)  # (S, d)
        return CascadeOutput(model.head(pooled), pooled, clips, exits)


def add_exits(model: CascadeFormer, names: tuple[str, ...] = (EXIT_AFTER_T1,)) -> CascadeFormer:
    """Give `model` fresh exit heads (the same classes as its main head) at `names`."""
    unknown = sorted(set(names) - set(exit_names(model, "layers")))
    if unknown:
        raise ValueError(f"no exit '{unknown[0]}' in this model; its exits: {', '.join(exit_names(model, 'layers'))}")
    d_model, num_classes = model.t1.pos_embedding.shape[-1], _num_classes(model)
    model.exits = ExitHeads({name: ExitHead(d_model, num_classes) for name in names})
    return model


def _num_classes(model: CascadeFormer) -> int:
    last = [m for m in model.head.modules() if isinstance(m, nn.Linear)][-1]
    return last.out_features
