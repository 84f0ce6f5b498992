"""CascadeFormer: a masked-pretrained temporal encoder T1, cascaded into a task encoder T2 for finetuning.

    clip (B, T, J, C) -> features -> + pos -> T1 -> E_pre (B, T, d)      pretraining: decoder -> (B, T, J, C)
    E_pre -> T2 -> E_fine;  cross-attention(Q = E_pre, K = V = E_fine) -> masked mean over frames -> head

Module and attribute names follow the official per-module checkpoints (reference B.11). Unlike the
official code, every attention and the pooling honour a padding mask, so a clip's logits do not
depend on which clips share its batch; passing pad_mask=None gives the official unmasked behaviour.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cascade_cli.config import ModelConfig
from cascade_cli.model.encoder import Encoder, check_heads
from cascade_cli.model.features import FrameFeatures, build_features


def padding_mask(lengths: Tensor, T: int) -> Tensor:
    """lengths (B,) -> (B, T) bool, True where frame t >= the clip's length (padding)."""
    return torch.arange(T, device=lengths.device) >= lengths[:, None]


def masked_mean(tokens: Tensor, pad_mask: Tensor | None) -> Tensor:
    """(B, T, d) -> (B, d), averaging real frames only so padding length cannot shift the embedding."""
    if pad_mask is None:
        return tokens.mean(1)
    valid = ~pad_mask[..., None]  # (B, T, 1)
    return tokens.masked_fill(~valid, 0.0).sum(1) / valid.sum(1).clamp(min=1)


class ResidualMLPDecoder(nn.Module):
    def __init__(self, d_model: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_model)
        self.fc2 = nn.Linear(d_model, out_dim)
        self.proj_residual = nn.Linear(d_model, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(x))) + self.proj_residual(x)


def make_decoder(kind: str, d_model: int, out_dim: int) -> nn.Module:
    """The pretraining decoders of paper Table 9; the paper keeps it weak (linear) so that the
    work of reconstructing is done, and learned, by T1."""
    if kind == "linear":
        return nn.Linear(d_model, out_dim)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, out_dim))
    if kind == "mlp_residual":
        return ResidualMLPDecoder(d_model, out_dim)
    raise ValueError(f"model.decoder: unknown decoder {kind!r}; use linear, mlp or mlp_residual")


class T1(nn.Module):
    def __init__(self, features: FrameFeatures, max_frames: int, num_layers: int, heads: int,
                 ffn_dim: int, dropout: float, pos_init: str = "trunc_normal", decoder: str | None = None):
        super().__init__()
        d = features.d_model
        self.features = features
        # A learned absolute position per frame: it also fixes the longest clip the model accepts.
        self.pos_embedding = nn.Parameter(torch.zeros(1, max_frames, d))
        if pos_init == "trunc_normal":
            nn.init.trunc_normal_(self.pos_embedding, std=0.02)
        self.transformer_encoder = Encoder(d, heads, num_layers, ffn_dim, dropout)
        # Only pretraining needs the decoder; finetuning builds T1 without it.
        self.reconstruction_head = (None if decoder is None else
                                    make_decoder(decoder, d, features.num_joints * features.in_channels))

    def forward(self, x: Tensor, pad_mask: Tensor | None = None, reconstruct: bool = False) -> Tensor:
        """x (B, T, J, C), pad_mask (B, T) -> tokens (B, T, d), or with reconstruct=True the decoded
        joints (B, T, J, C): one forward call for the whole pretraining step, as DDP and
        torch.compile wrap forward only."""
        tokens = self.transformer_encoder(self.embed_frames(x), pad_mask)  # (B, T, d)
        return self.reconstruct(tokens) if reconstruct else tokens

    def embed_frames(self, x: Tensor) -> Tensor:
        """x (B, T, J, C) -> the encoder's input tokens (B, T, d): frame features plus positions."""
        T, max_frames = x.shape[1], self.pos_embedding.shape[1]
        if T > max_frames:
            raise ValueError(f"clip of {T} frames is longer than model.max_frames={max_frames}; "
                             "sample fewer frames (data.frames) or build the model with a larger max_frames")
        return self.features(x) + self.pos_embedding[:, :T]

    def reconstruct(self, tokens: Tensor) -> Tensor:
        """tokens (B, T, d) -> joints (B, T, J, C)."""
        if self.reconstruction_head is None:
            raise RuntimeError("this T1 was built without a decoder (build_t1(..., with_decoder=True))")
        joints = (self.features.num_joints, self.features.in_channels)
        return self.reconstruction_head(tokens).unflatten(-1, joints)  # (B, T, J, C)


class T2(nn.Module):
    """A fresh encoder stacked on T1, so the task can reshape the features while T1 keeps what it learned."""

    def __init__(self, d_model: int, heads: int, num_layers: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.encoder = Encoder(d_model, heads, num_layers, ffn_dim, dropout)

    def forward(self, tokens: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        return self.encoder(tokens, pad_mask)  # (B, T, d)


class CrossAttention(nn.Module):
    """Fuses the two stages: the pretrained tokens query the finetuned ones, and the residual keeps
    the pretrained tokens in the output. with_ffn adds the official NTU feed-forward block (its
    `norm1`/`ffn`/`norm2`); without it the module is the Penn/N-UCLA one (`norm`)."""

    def __init__(self, d_model: int, heads: int, dropout: float, with_ffn: bool):
        super().__init__()
        # The Penn/N-UCLA module has no attention dropout, only on the residual branch.
        self.cross_attention = nn.MultiheadAttention(d_model, heads, dropout=dropout if with_ffn else 0.0,
                                                     batch_first=True)
        self.dropout = nn.Dropout(dropout)
        if with_ffn:
            self.norm1 = nn.LayerNorm(d_model)
            self.ffn = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Dropout(dropout),
                                     nn.Linear(d_model, d_model))
            self.norm2 = nn.LayerNorm(d_model)
        else:
            self.norm = nn.LayerNorm(d_model)
            self.ffn = None

    def forward(self, query: Tensor, context: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """query = T1 tokens (B, T, d), context = T2 tokens (B, T, d) -> (B, T, d)."""
        attended = self.cross_attention(query, context, context, key_padding_mask=pad_mask,
                                        need_weights=False)[0]
        if self.ffn is None:
            return self.norm(query + self.dropout(attended))
        x = self.norm1(query + self.dropout(attended))
        return self.norm2(x + self.dropout(self.ffn(x)))


class LinearHead(nn.Module):
    def __init__(self, d_model: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(d_model, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class MLPHead(nn.Module):
    def __init__(self, d_model: int, num_classes: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d_model), nn.Dropout(dropout), nn.Linear(d_model, d_model),
                                 nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_model, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class CascadeFormer(nn.Module):
    def __init__(self, t1: T1, t2: T2, fusion: CrossAttention, head: nn.Module):
        super().__init__()
        self.t1, self.t2, self.fusion, self.head = t1, t2, fusion, head
        self.freeze_t1 = False  # set by set_t1_trainable

    def embed(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """x (B, T, J, C) -> pooled clip embedding (B, d), the input of the head."""
        return self.pool(self.t1(x, pad_mask), pad_mask)

    def pool(self, pretrained: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """T1's tokens (B, T, d) -> pooled clip embedding (B, d): T2, fusion and the masked mean. Apart
        from embed for callers that also decode T1's tokens (continual learning's reconstruction)."""
        return self.fuse(pretrained, self.t2(pretrained, pad_mask), pad_mask)

    def fuse(self, pretrained: Tensor, finetuned: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """T1's and T2's tokens (B, T, d) -> pooled clip embedding (B, d)."""
        return masked_mean(self.fusion(pretrained, finetuned, pad_mask), pad_mask)

    def forward(self, x: Tensor, pad_mask: Tensor | None = None, with_exits: bool = False):
        """x (B, T, J, C) -> logits (B, K); with_exits=True -> (logits, {exit name: (B, K) logits}) of
        the exit heads in `self.exits` (model/exits.py), in one forward call for joint training."""
        if not with_exits:
            return self.head(self.embed(x, pad_mask))  # (B, K)
        out = self.exits.run(self, x, pad_mask)
        return out.logits, out.exits

    def train(self, mode: bool = True) -> CascadeFormer:
        """A fully frozen T1 stays in eval mode: it is then a fixed feature extractor, and dropout
        would only add noise that none of its weights can adapt to, and make training features
        differ from evaluation ones (the official 'fully freeze' ablation runs T1 in eval mode too)."""
        super().train(mode)
        if self.freeze_t1:
            self.t1.eval()
        return self


def build_t1(cfg: ModelConfig, num_joints: int, in_channels: int, with_decoder: bool) -> T1:
    check_heads(cfg.d_model, cfg.t1_heads, "model.d_model vs. model.t1_heads")
    return T1(build_features(cfg, num_joints, in_channels), cfg.max_frames, cfg.t1_layers, cfg.t1_heads,
              cfg.ffn_dim, cfg.dropout, cfg.pos_init, cfg.decoder if with_decoder else None)


def build_classifier(cfg: ModelConfig, num_joints: int, in_channels: int, num_classes: int) -> CascadeFormer:
    t2_heads = cfg.t2_heads or cfg.t1_heads
    check_heads(cfg.d_model, t2_heads, "model.d_model vs. model.t2_heads (0 = model.t1_heads)")
    t2 = T2(cfg.d_model, t2_heads, cfg.t2_layers or cfg.t1_layers, cfg.ffn_dim, cfg.t2_dropout)
    # The official fusion uses T1's head count (reference B.2); fusion_heads reproduces the official
    # evaluation quirk of rebuilding it with another count.
    fusion_heads = cfg.fusion_heads or cfg.t1_heads
    check_heads(cfg.d_model, fusion_heads, "model.d_model vs. model.fusion_heads (0 = model.t1_heads)")
    fusion = CrossAttention(cfg.d_model, fusion_heads, cfg.fusion_dropout, with_ffn=cfg.fusion == "ffn")
    head = (LinearHead(cfg.d_model, num_classes) if cfg.head == "linear" else
            MLPHead(cfg.d_model, num_classes, cfg.head_dropout))
    t1 = build_t1(cfg, num_joints, in_channels, with_decoder=False)
    return CascadeFormer(t1, t2, fusion, head)


def set_t1_trainable(model: CascadeFormer, mode: str, k: int = 1) -> None:
    """finetune.t1: "full" trains all of T1; "frozen" trains none of it and keeps it in eval mode;
    "last_k" trains only its last k encoder layers (features, positions and earlier layers frozen,
    still in train mode like the rest of the model)."""
    layers = model.t1.transformer_encoder.layers
    if mode not in ("full", "frozen", "last_k"):
        raise ValueError(f"finetune.t1: unknown mode {mode!r}; use full, frozen or last_k")
    if mode == "last_k" and not 1 <= k <= len(layers):
        raise ValueError(f"finetune.t1_trainable_layers={k} must be between 1 and the {len(layers)} "
                         "layers of T1 (model.t1_layers)")
    model.t1.requires_grad_(mode == "full")
    if mode == "last_k":
        layers[len(layers) - k:].requires_grad_(True)
    model.freeze_t1 = mode == "frozen"
    model.train(model.training)
