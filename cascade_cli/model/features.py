"""Feature extractors: how one skeleton frame (J joints x C coordinates) becomes one token of width d.

The three CascadeFormer variants (paper §4.3) differ only here; everything after the frame token is
shared. Attribute names mirror the official checkpoints (reference B.11), so importing released
weights is a prefix rename:

    1.0   joint_embedding                      Linear(J*C, d) on the flattened frame
    1.1   joint_conv -> joint_embedding        Conv1d along the joint axis first, no channel expansion
    1.2   spatial_transformer [-> joint_embedding]
          "paper" (official NTU): joints embedded to d/J, one attention layer, concatenated to d
          "code"  (official Penn/N-UCLA): joints embedded to d, one attention layer, projected back
                  to C, then the frame Linear as in 1.0
"""

from __future__ import annotations

from torch import Tensor, nn

from cascade_cli.config import ModelConfig
from cascade_cli.model.encoder import Encoder, check_heads


class SpatialTransformer(nn.Module):
    """One attention layer across the joints of each frame, so a joint's feature can depend on the
    rest of the body before the frame is collapsed into one token."""

    def __init__(self, in_channels: int, width: int, heads: int, ffn_dim: int, dropout: float,
                 project_back: bool):
        super().__init__()
        self.joint_embedding = nn.Linear(in_channels, width)
        self.encoder = Encoder(width, heads, 1, ffn_dim, dropout)
        self.output_proj = nn.Linear(width, in_channels) if project_back else None

    def forward(self, x: Tensor) -> Tensor:
        B, T, J, C = x.shape
        # Every joint slot is a token, masked or invisible ones included (their zeros are the input),
        # so no padding mask is needed here.
        tokens = self.encoder(self.joint_embedding(x.reshape(B * T, J, C)))  # (B*T, J, w)
        if self.output_proj is not None:
            tokens = self.output_proj(tokens)  # (B*T, J, C)
        return tokens.reshape(B, T, J, -1)  # (B, T, J, w or C)


class FrameFeatures(nn.Module):
    def __init__(self, variant: str, d_model: int, num_joints: int, in_channels: int,
                 spatial_form: str = "paper", spatial_heads: int = 1, ffn_dim: int = 2048,
                 dropout: float = 0.1):
        super().__init__()
        self.d_model, self.num_joints, self.in_channels = d_model, num_joints, in_channels
        self.joint_conv = None
        self.spatial_transformer = None
        concatenate_joints = variant == "1.2" and spatial_form == "paper"
        if variant == "1.1":
            self.joint_conv = nn.Sequential(
                nn.Conv1d(in_channels, in_channels, 3, padding=1), nn.ReLU(),
                nn.Conv1d(in_channels, in_channels, 1))
        elif variant == "1.2":
            width = d_model // num_joints if concatenate_joints else d_model
            self.spatial_transformer = SpatialTransformer(in_channels, width, spatial_heads, ffn_dim,
                                                          dropout, project_back=not concatenate_joints)
        elif variant != "1.0":
            raise ValueError(f"model.variant: unknown variant {variant!r}; use 1.0, 1.1 or 1.2")
        # The paper form's concatenated joint tokens already are the d-wide frame token.
        self.joint_embedding = None if concatenate_joints else nn.Linear(num_joints * in_channels, d_model)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, J, C) -> frame tokens (B, T, d)."""
        B, T, J, C = x.shape
        if self.joint_conv is not None:
            x = self.joint_conv(x.reshape(B * T, J, C).transpose(1, 2))  # (B*T, C, J)
            x = x.transpose(1, 2).reshape(B, T, J, C)
        if self.spatial_transformer is not None:
            x = self.spatial_transformer(x)  # (B, T, J, d/J or C)
        x = x.flatten(2)  # (B, T, J*C or d), joint-major: x0, y0, x1, y1, ...
        return x if self.joint_embedding is None else self.joint_embedding(x)  # (B, T, d)


def build_features(cfg: ModelConfig, num_joints: int, in_channels: int) -> FrameFeatures:
    """FrameFeatures from the config, with errors that name the config keys at fault."""
    heads = cfg.spatial_heads or cfg.t1_heads
    if cfg.variant == "1.2" and cfg.spatial_form == "paper":
        if cfg.d_model % num_joints:
            raise ValueError(f"model.d_model={cfg.d_model} must be divisible by the {num_joints} joints "
                             "for variant 1.2 with spatial_form 'paper' (each joint gets d_model/J)")
        check_heads(cfg.d_model // num_joints, heads, "model.d_model / joints vs. model.spatial_heads "
                    "(0 = model.t1_heads)")
    elif cfg.variant == "1.2":
        check_heads(cfg.d_model, heads, "model.d_model vs. model.spatial_heads (0 = model.t1_heads)")
    return FrameFeatures(cfg.variant, cfg.d_model, num_joints, in_channels, cfg.spatial_form, heads,
                         cfg.ffn_dim, cfg.dropout)
