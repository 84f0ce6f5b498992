"""The CascadeFormer model: feature extractors, T1/T2 encoders, fusion, heads and their builders."""

from cascade_cli.model.cascadeformer import (CascadeFormer, CrossAttention, LinearHead, MLPHead, T1, T2,
                                             build_classifier, build_t1, masked_mean, padding_mask,
                                             set_t1_trainable)
from cascade_cli.model.encoder import Encoder
from cascade_cli.model.features import FrameFeatures, SpatialTransformer, build_features

__all__ = [
    "CascadeFormer", "CrossAttention", "Encoder", "FrameFeatures", "LinearHead", "MLPHead",
    "SpatialTransformer", "T1", "T2", "build_classifier", "build_features", "build_t1", "masked_mean",
    "padding_mask", "set_t1_trainable",
]
