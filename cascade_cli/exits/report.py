"""What an honest early-exit report holds (reference early_exit.md): the threshold chosen on
validation, test top-1 with and without exits, compute counted and time measured both ways, where
clips leave, and how calibrated each exit is.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from cascade_cli.atomic import atomic_path, write_text
from cascade_cli.data.format import open_dataset
from cascade_cli.data.splits import run_splits
from cascade_cli.errors import UserError
from cascade_cli.inference import Classifier, load_classifier
from cascade_cli.inference.cascade import cascade_forward, exit_confidence, require_exit_head
from cascade_cli.inference.scorer import device_batches
from cascade_cli.metrics import expected_calibration_error
from cascade_cli.model.exits import EXIT_AFTER_T1


@torch.no_grad()
def both_paths(classifier: Classifier, batches: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(exit logits, full logits, labels) of prepared batches (inference.scorer.device_batches); T1
    runs once for both."""
    model, early, full, labels = classifier.model.eval(), [], [], []
    for x, _, pad, y in batches:
        tokens = model.t1(x, pad)
        early.append(model.exits[EXIT_AFTER_T1](tokens, pad).float().cpu())
        full.append(model.head(model.pool(tokens, pad)).float().cpu())
        labels.append(y.cpu())
    return torch.cat(early).numpy(), torch.cat(full).numpy(), torch.cat(labels).numpy()


def sweep(early: np.ndarray, full: np.ndarray, labels: np.ndarray, rule: str = "max_softmax") -> list[dict]:
    """For every distinct exit confidence as a threshold (and one above all): the share of clips
    leaving and the cascade's top-1, from most exits to none."""
    confidence = exit_confidence(torch.from_numpy(early), rule).numpy()
    cut_points = np.r_[np.unique(confidence), 1.0 + 1e-6]
    rows = []
    for threshold in cut_points:
        leave = confidence >= threshold
        predicted = np.where(leave, early.argmax(axis=1), full.argmax(axis=1))
        rows.append({"threshold": float(threshold), "exit_share": float(leave.mean()),
                     "top1": float((predicted == labels).mean())})
    return rows


def choose_threshold(early: np.ndarray, full: np.ndarray, labels: np.ndarray, rule: str = "max_softmax", *,
                     max_drop: float | None = None, min_exit_share: float | None = None) -> dict:
    """On the clips given (the validation split: never call this with test clips), the sweep point
    with the most exits whose top-1 stays within `max_drop` points (of 100) of the full model's, or,
    with `min_exit_share` (what a compute budget asks), the best top-1 among those where at least
    that share of clips leaves."""
    rows = sweep(early, full, labels, rule)
    if min_exit_share is not None:
        allowed = [row for row in rows if row["exit_share"] >= min_exit_share - 1e-12]
        return max(allowed, key=lambda row: (row["top1"], row["exit_share"], -row["threshold"]))
    full_top1 = float((full.argmax(axis=1) == labels).mean())
    allowed = [row for row in rows if row["top1"] >= full_top1 - max_drop / 100 - 1e-12]
    return max(allowed, key=lambda row: (row["exit_share"], row["top1"], -row["threshold"]))


def expected_gflops(flops: dict[str, float], exit_share: float) -> float:
    """GFLOPs per clip of the cascade: every clip pays T1 and the exit head, the ones that stay pay
    the rest of the model."""
    return (flops["t1"] + flops["exit_head"] + (1.0 - exit_share) * (flops["full"] - flops["t1"])) / 1e9


LATENCY_CLIPS = 300  # test clips timed one at a time for batch-1 latency


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# PyTorch's counter knows the GPU attention kernels but not the CPU one, so on CPU it would miss
# every attention product; the CPU kernel is counted with the formula PyTorch uses for the GPU ones.
_UNCOUNTED = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}


def flops_per_clip(classifier: Classifier, frames: int) -> dict[str, float]:
    """FLOPs of T1, of the exit head after it, and of the full model, for one clip of `frames`
    frames, counted by PyTorch's FLOP counter. Counted with autograd on: without it, eval-mode
    nn.TransformerEncoderLayer takes its fused fast path, which the counter does not see (it would
    report about an eighth of the work); the arithmetic is the same either way."""
    J, C = classifier.input_shape
    x = torch.zeros(1, frames, J, C, device=classifier.device)
    model = classifier.model.eval()
    with torch.enable_grad():
        with FlopCounterMode(display=False, custom_mapping=_UNCOUNTED) as t1:
            tokens = model.t1(x)
        with FlopCounterMode(display=False, custom_mapping=_UNCOUNTED) as head:
            model.exits[EXIT_AFTER_T1](tokens)
        with FlopCounterMode(display=False, custom_mapping=_UNCOUNTED) as full:
            model(x)
    return {"t1": float(t1.get_total_flops()), "exit_head": float(head.get_total_flops()),
            "full": float(full.get_total_flops())}


@torch.no_grad()
def _seconds_per_batch(classifier: Classifier, batches: list, threshold: float, rule: str) -> list[float]:
    """Seconds of the cascade at `threshold` for each prepared batch. A threshold above 1 is the
    full model."""
    model, seconds = classifier.model.eval(), []
    for x, _, pad, _ in batches:
        start = time.perf_counter()
        cascade_forward(model, x, pad, threshold, rule)
        if classifier.device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds


def _timings(classifier: Classifier, batches: list, singles: list, threshold: float, rule: str,
             repeats: int = 5) -> tuple[float, dict[str, float]]:
    """(seconds for all `batches`, the median of `repeats` passes; batch-1 milliseconds over
    `singles`, mean and p95)."""
    _seconds_per_batch(classifier, batches[:1], threshold, rule)  # warm-up
    passes = [sum(_seconds_per_batch(classifier, batches, threshold, rule)) for _ in range(repeats)]
    ms = 1e3 * np.array(_seconds_per_batch(classifier, singles, threshold, rule))
    return float(np.median(passes)), {"mean": float(ms.mean()), "p95": float(np.percentile(ms, 95)),
                                      "clips": len(ms)}


def early_exit_report(classifier: Classifier, dataset, *, max_drop: float = 0.5, budget: float | None = None,
                      rule: str = "max_softmax", batch_size: int = 64, out: str | Path | None = None) -> dict:
    """Choose the exit threshold on the validation clips: the most exits with top-1 at most
    `max_drop` points below the full model's there or, with `budget` (a fraction of the full model's
    GFLOPs per clip), the best top-1 within it. Then report on the test clips: top-1 with and
    without exits, where clips leave (overall and per class), GFLOPs per clip both ways, measured
    batched throughput and batch-1 latency (mean, p95) both ways, and each path's calibration
    (ECE). FLOPs are counted at the run's clip length (data.frames, or the training clips' median
    length where clips keep their own)."""
    require_exit_head(classifier)
    exit_confidence(torch.zeros(1, 2), rule)  # an unknown rule fails before any work
    if not 0.0 <= max_drop <= 100.0:
        raise UserError(f"--max-drop {max_drop:g}: top-1 points between 0 and 100 (0.5 is half a point)")
    splits = run_splits(classifier.config, dataset)
    if not len(splits.val):
        raise UserError(f"{classifier.path}: the run has no validation clips to choose the exit threshold on")
    frames = classifier.config.data.frames or int(np.median(dataset.lengths[splits.train]))
    flops = flops_per_clip(classifier, frames)
    full_gflops = flops["full"] / 1e9
    val_early, val_full, val_labels = both_paths(classifier, device_batches(classifier, dataset, splits.val, batch_size))
    if budget is None:
        chosen = choose_threshold(val_early, val_full, val_labels, rule, max_drop=max_drop)
    else:
        cheapest = expected_gflops(flops, 1.0) / full_gflops
        if not cheapest <= budget <= 1.0:
            raise UserError(f"--budget {budget:g}: between {cheapest:.3f} (every clip leaving after T1) and 1 "
                            "(the full model), as a fraction of the full model's GFLOPs per clip")
        # expected_gflops(share) <= budget * full, solved for the share of clips leaving
        min_share = 1.0 - (budget * flops["full"] - flops["t1"] - flops["exit_head"]) / (flops["full"] - flops["t1"])
        chosen = choose_threshold(val_early, val_full, val_labels, rule, min_exit_share=min(1.0, max(0.0, min_share)))
    test_batches = device_batches(classifier, dataset, splits.test, batch_size)
    early, full, labels = both_paths(classifier, test_batches)
    early_probs = torch.from_numpy(early).softmax(dim=-1).numpy()
    leave = exit_confidence(torch.from_numpy(early), rule).numpy() >= chosen["threshold"]
    predicted = np.where(leave, early.argmax(axis=1), full.argmax(axis=1))
    share = float(leave.mean())
    singles = device_batches(classifier, dataset, splits.test[:LATENCY_CLIPS], 1)
    seconds_full, latency_full = _timings(classifier, test_batches, singles, 2.0, rule)
    seconds_exit, latency_exit = _timings(classifier, test_batches, singles, chosen["threshold"], rule)
    names = dataset.class_names
    per_class = {names[c]: float(leave[labels == c].mean()) for c in np.unique(labels)}
    report = {
        "checkpoint": str(classifier.path), "dataset": dataset.name, "protocol": classifier.config.data.protocol,
        "rule": rule, **({"budget": budget} if budget is not None else {"max_drop": max_drop}),
        "threshold": chosen["threshold"], "chosen_on": "val",
        "val": {**chosen, "clips": int(len(splits.val)), "full_top1": float((val_full.argmax(1) == val_labels).mean()),
                "gflops_per_clip_early_exit": expected_gflops(flops, chosen["exit_share"])},
        "test": {
            "clips": int(len(labels)),
            "top1_full": float((full.argmax(axis=1) == labels).mean()),
            "top1_early_exit": float((predicted == labels).mean()),
            "top1_exit_head_alone": float((early.argmax(axis=1) == labels).mean()),
            "exit_share": {EXIT_AFTER_T1: share, "final": 1.0 - share},
            "exit_share_per_class": {EXIT_AFTER_T1: per_class},
            "frames_counted": frames,
            "gflops_per_clip_full": full_gflops,
            "gflops_per_clip_early_exit": expected_gflops(flops, share),
            "seconds_full": seconds_full, "seconds_early_exit": seconds_exit,
            "clips_per_second_full": len(labels) / seconds_full, "clips_per_second_early_exit": len(labels) / seconds_exit,
            "batch1_latency_ms_full": latency_full, "batch1_latency_ms_early_exit": latency_exit,
            "batch1_speedup": latency_full["mean"] / latency_exit["mean"],
            "compute_speedup": full_gflops / expected_gflops(flops, share),
            "ece_exit_head": expected_calibration_error(early_probs, labels),
            "ece_full": expected_calibration_error(torch.from_numpy(full).softmax(dim=-1).numpy(), labels),
        },
        "device": str(classifier.device), "batch_size": batch_size,
    }
    if out is not None:
        write_text(out, json.dumps(report, indent=2) + "\n")
        curves = {"val": sweep(val_early, val_full, val_labels, rule), "test": sweep(early, full, labels, rule)}
        _plot(Path(out).with_suffix(".png"), curves, flops, report)
    return report


def evaluate_early_exit(checkpoint: str | Path, *, data: str | Path | None = None, device: str | None = None,
                        out: str | Path | None = None, **options) -> tuple[dict, Path]:
    """`cascade evaluate --early-exit`: the report of a checkpoint on its own dataset (or `data`),
    written to `out` [default: <checkpoint>.early_exit.json beside it]. Returns (report, out)."""
    classifier = load_classifier(checkpoint, device)
    dataset = open_dataset(data or classifier.config.data.path)
    classifier.check_dataset(dataset)
    out = Path(out or classifier.path.parent / f"{classifier.path.stem}.early_exit.json")
    return early_exit_report(classifier, dataset, out=out, **options), out


def _plot(path: Path, curves: dict[str, list[dict]], flops: dict[str, float], report: dict) -> None:
    """Top-1 against GFLOPs per clip over every threshold, validation and test, the chosen one marked."""
    from matplotlib.figure import Figure  # a second of import time, paid only here

    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for split, rows in curves.items():
        ax.plot([expected_gflops(flops, r["exit_share"]) for r in rows], [100 * r["top1"] for r in rows], label=split)
    t = report["test"]
    ax.plot([t["gflops_per_clip_early_exit"]], [100 * t["top1_early_exit"]], "o", color="black",
            label=f"chosen on val: {report['rule']} >= {report['threshold']:.3f}")
    ax.plot([t["gflops_per_clip_full"]], [100 * t["top1_full"]], "s", color="grey", label="full model (test)")
    ax.set(xlabel="GFLOPs per clip", ylabel="top-1 %", title=f"{report['dataset']}: early exit after T1")
    ax.legend(fontsize=8, loc="lower right")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
