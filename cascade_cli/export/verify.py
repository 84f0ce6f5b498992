"""Verification, part of every export: the exported graphs must give PyTorch's logits on clips of
several lengths and batch sizes, padded ones included, or the export is not written.

Both sides run through their inference backend, so what is checked is what predict will run: the
whole classifier, and for a cascade every exit's and the main head's logits along the stage graphs
(every clip staying to the end, so each stage sees the full batch).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cascade_cli.inference.classifier import Classifier
from cascade_cli.model import padding_mask

TOLERANCE = 1e-4  # the largest absolute logit difference an export may show


def verification_shapes(max_frames: int) -> list[list[int]]:
    """Per case, the clip lengths of one batch: 1 clip at the longest the model takes, then 3 and 5
    clips padded to shorter lengths, down to a single frame."""
    return [[int(n) for n in np.linspace(frames, 1, batch).round()]
            for batch, frames in ((1, max_frames), (3, (max_frames + 1) // 2), (5, max(1, max_frames // 4)))]


def _never(name: str, logits: Tensor, clips: Tensor) -> Tensor:
    return torch.zeros(len(clips), dtype=torch.bool)


def _worst(a: Tensor, b: Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


@torch.no_grad()
def verify(reference: Classifier, exported: Classifier) -> dict:
    """Largest |logit difference| between `reference` (PyTorch eager, float32, eval mode) and
    `exported` (ONNX Runtime) per graph and case, on seeded random clips whose padding is zeros,
    as collated batches pad."""
    J, C = reference.input_shape
    generator = torch.Generator().manual_seed(0)
    cases = []
    for lengths in verification_shapes(reference.config.model.max_frames):
        lengths_t = torch.tensor(lengths)
        pad = padding_mask(lengths_t, lengths[0])  # (B, T)
        x = torch.randn(len(lengths), lengths[0], J, C, generator=generator).masked_fill(pad[..., None, None], 0.0)
        diffs = {"classifier": _worst(reference.backend.forward(x, pad)[0], exported.backend.forward(x, pad)[0])}
        if exported.backend.exits:
            ours, theirs = reference.backend.cascade(x, pad, _never), exported.backend.cascade(x, pad, _never)
            diffs.update({f"exit {name}": _worst(ours.exits[name], theirs.exits[name]) for name in ours.exits})
            diffs["cascade final"] = _worst(ours.logits, theirs.logits)
        cases.append({"batch": len(lengths), "frames": lengths[0], "lengths": lengths,
                      "max_abs_logit_diff": max(diffs.values()), "by_graph": diffs})
    return {"max_abs_logit_diff": max(case["max_abs_logit_diff"] for case in cases), "tolerance": TOLERANCE,
            "reference": "PyTorch eager, float32, eval mode", "cases": cases}
