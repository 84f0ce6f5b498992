"""`cascade predict`: the top classes of raw skeleton files, scored through the inference layer.

The files are read and preprocessed as the checkpoint's test split was (cascade_cli.inference.inputs
lists the formats); `raw=True` feeds the arrays unchanged, for debugging and parity checks.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cascade_cli.config import BACKENDS
from cascade_cli.errors import UserError
from cascade_cli.inference import Classifier, load_classifier, score_inputs


def open_classifier(source: str | Path, backend: str = "torch", device: str | None = None,
                    precision: str = "fp32") -> Classifier:
    """A checkpoint run in PyTorch (backend "torch") in `precision`, or a `cascade export` folder run
    in ONNX Runtime on the CPU ("onnx", float32): the same Classifier either way, so preprocessing is
    the same."""
    if backend == "torch":
        return load_classifier(source, device, precision)
    if backend != "onnx":
        raise UserError(f"--backend {backend}: use one of {', '.join(BACKENDS)}")
    if precision != "fp32":
        raise UserError(f"--precision {precision}: an exported model runs as exported, in float32; leave it out")
    if device not in (None, "cpu"):
        raise UserError(f"--device {device}: --backend onnx runs on the CPU; leave --device and --gpu out")
    from cascade_cli.export.runtime import load_exported

    return load_exported(source)


def predict(checkpoint: str | Path, inputs: list[str | Path], *, top_k: int = 5, raw: bool = False,
            device: str | None = None, image_size: tuple[float, float] | None = None, views: int = 1,
            without_confidence: bool = False, exit_threshold: float | None = None,
            exit_rule: str = "max_softmax", backend: str = "torch", precision: str = "fp32") -> list[dict]:
    """Top-k classes, probabilities and logits for every clip of every input file. A clip read
    without the confidence channel its model uses (accepted with without_confidence) carries a note.
    With `exit_threshold` and `exit_rule` (from `cascade evaluate --early-exit`), clips go through
    the early-exit cascade and each says where it left (an exit's name, or "final"). backend="onnx"
    reads an export folder (`cascade export`) as `checkpoint` and runs it in ONNX Runtime. precision:
    fp32 unless asked (bf16, fp16: autocast, runtime.inference_dtype)."""
    classifier = open_classifier(checkpoint, backend, device, precision)
    scores = score_inputs(classifier, inputs, raw=raw, image_size=image_size, views=views,
                          without_confidence=without_confidence, exit_threshold=exit_threshold,
                          exit_rule=exit_rule)
    note = ("without confidence: no joint was zeroed as invisible, unlike the model's training inputs"
            if without_confidence and classifier.zeroes_invisible_joints and not raw else None)
    names = classifier.class_names
    logits = torch.from_numpy(scores.logits)
    results = []
    exits = [None] * len(logits) if scores.exits is None else [str(e) for e in scores.exits]
    for source, p, z, exit_at in zip(scores.names, logits.softmax(-1), logits, exits):
        results.append({
            "input": source, "top": top_classes(p, names, top_k),
            "probs": [float(v) for v in p], "logits": [float(v) for v in z],
            **({"note": note} if note else {}), **({"exit": exit_at} if exit_at else {}),
        })
    return results


def top_classes(probs: torch.Tensor, names: list[str], k: int) -> list[dict]:
    """(K,) probabilities -> the k most likely classes: label, class name, probability."""
    top = probs.topk(min(k, len(names)))
    return [{"label": int(i), "class": names[int(i)], "prob": float(v)} for v, i in zip(top.values, top.indices)]
