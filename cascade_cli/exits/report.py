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
from cascade_cli.inference.cascade import (FINAL, LeaveRule, cascade_forward, check_rule, exit_confidence,
                                           exit_places, require_exit_head)
from cascade_cli.inference.scorer import device_batches
from cascade_cli.metrics import expected_calibration_error
from cascade_cli.model.exits import encoder_stages, exit_name


@torch.no_grad()
def every_place(classifier: Classifier, batches: list) -> tuple[np.ndarray, np.ndarray]:
    """(logits (P, N, K) at every place a clip can leave, exit_places' order: each exit, then the
    main head; labels (N,)) of prepared batches (inference.scorer.device_batches), every clip
    running to the end."""
    model, logits, labels = classifier.model.eval(), [], []
    places = exit_places(model)
    for x, _, pad, y in batches:
        out = model.exits.run(model, x, pad)
        logits.append(torch.stack([*(out.exits[name] for name in places[:-1]), out.logits.float()]).cpu())
        labels.append(y.cpu())
    return torch.cat(logits, dim=1).numpy(), torch.cat(labels).numpy()


def leave_at(logits: np.ndarray, rule: str, threshold: float) -> np.ndarray:
    """(P, N, K) logits at every place -> (N,) the place each clip leaves at under `rule` and
    `threshold`, decided by the very rule the cascade runs (inference.cascade.LeaveRule)."""
    exits, N = len(logits) - 1, logits.shape[1]
    decide = LeaveRule(rule, threshold, N)
    for k in range(exits):
        staying = torch.from_numpy(np.flatnonzero(decide.left_at.numpy() < 0))
        decide(str(k), torch.from_numpy(logits[k])[staying], staying)
    return np.where(decide.left_at.numpy() < 0, exits, decide.left_at.numpy())


def thresholds(logits: np.ndarray, rule: str) -> np.ndarray:
    """Every threshold that changes where some clip leaves, from most exits to none: each distinct
    exit confidence and one above all, or, for patience, 1 to one more than the exits."""
    if rule == "patience":
        return np.arange(1, len(logits) + 1, dtype=np.float64)
    confidence = exit_confidence(torch.from_numpy(logits[:-1]).flatten(0, 1), rule).numpy()
    return np.r_[np.unique(confidence), 1.0 + 1e-6]


def sweep(logits: np.ndarray, labels: np.ndarray, cost: np.ndarray, rule: str = "max_softmax") -> list[dict]:
    """For every threshold: the share of clips leaving early, the cascade's top-1 and its average
    GFLOPs per clip (`cost`: GFLOPs a clip spends when it leaves at each place)."""
    rows, clips = [], np.arange(logits.shape[1])
    for threshold in thresholds(logits, rule):
        at = leave_at(logits, rule, threshold)
        predicted = logits[at, clips].argmax(axis=1)
        rows.append({"threshold": float(threshold), "exit_share": float((at < len(logits) - 1).mean()),
                     "top1": float((predicted == labels).mean()), "gflops": float(cost[at].mean())})
    return rows


def choose_threshold(logits: np.ndarray, labels: np.ndarray, cost: np.ndarray, rule: str = "max_softmax", *,
                     max_drop: float | None = None, max_gflops: float | None = None) -> dict:
    """On the clips given (the validation split: never call this with test clips), the sweep point
    with the least compute whose top-1 stays within `max_drop` points (of 100) of the full model's,
    or, with `max_gflops` (a compute budget), the best top-1 within that budget."""
    rows = sweep(logits, labels, cost, rule)
    if max_gflops is not None:
        allowed = [row for row in rows if row["gflops"] <= max_gflops * (1 + 1e-9)]
        return max(allowed, key=lambda row: (row["top1"], -row["gflops"], -row["threshold"]))
    full_top1 = float((logits[-1].argmax(axis=1) == labels).mean())
    allowed = [row for row in rows if row["top1"] >= full_top1 - max_drop / 100 - 1e-12]
    return max(allowed, key=lambda row: (-row["gflops"], row["top1"], -row["threshold"]))


LATENCY_CLIPS = 300  # test clips timed one at a time for batch-1 latency


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# PyTorch's counter knows the GPU attention kernels but not the CPU one, so on CPU it would miss
# every attention product; the CPU kernel is counted with the formula PyTorch uses for the GPU ones.
_UNCOUNTED = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}


def _counted(fn, *args) -> tuple:
    with FlopCounterMode(display=False, custom_mapping=_UNCOUNTED) as counter:
        result = fn(*args)
    return result, float(counter.get_total_flops())


def flops_per_clip(classifier: Classifier, frames: int) -> dict:
    """FLOPs of one clip of `frames` frames, counted by PyTorch's FLOP counter: "full", the
    classifier without exits, and "cost", what a clip spends when it leaves at each of
    exit_places(model) (the exit heads it passed included). Counted with autograd on: without it,
    eval-mode nn.TransformerEncoderLayer takes its fused fast path, which the counter does not see
    (it would report about an eighth of the work); the arithmetic is the same either way."""
    J, C = classifier.input_shape
    x = torch.zeros(1, frames, J, C, device=classifier.device)
    model = classifier.model.eval()
    cost: dict[str, float] = {}
    with torch.enable_grad():
        tokens, spent = _counted(model.t1.embed_frames, x)
        for stage, layers in encoder_stages(model):
            if stage == "t2":
                pretrained = tokens
            for i, layer in enumerate(layers, 1):
                tokens, flops = _counted(layer, tokens)
                spent += flops
                if (name := exit_name(stage, i, len(layers))) in model.exits:
                    spent += _counted(model.exits[name], tokens)[1]
                    cost[name] = spent
        cost[FINAL] = spent + _counted(lambda: model.head(model.fuse(pretrained, tokens)))[1]
        full = _counted(model, x)[1]
    return {"full": full, "cost": cost}


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
    """Choose the exit threshold on the validation clips: the least compute with top-1 at most
    `max_drop` points below the full model's there or, with `budget` (a fraction of the full model's
    GFLOPs per clip), the best top-1 within it. Then report on the test clips: top-1 with and
    without exits, where clips leave (overall and per class), GFLOPs per clip both ways, measured
    batched throughput and batch-1 latency (mean, p95) both ways, and each exit's calibration (ECE).
    FLOPs are counted at the run's clip length (data.frames, or the training clips' median length
    where clips keep their own)."""
    require_exit_head(classifier)
    check_rule(rule)
    if not 0.0 <= max_drop <= 100.0:
        raise UserError(f"--max-drop {max_drop:g}: top-1 points between 0 and 100 (0.5 is half a point)")
    splits = run_splits(classifier.config, dataset)
    if not len(splits.val):
        raise UserError(f"{classifier.path}: the run has no validation clips to choose the exit threshold on")
    places = exit_places(classifier.model)
    frames = classifier.config.data.frames or int(np.median(dataset.lengths[splits.train]))
    flops = flops_per_clip(classifier, frames)
    cost = np.array([flops["cost"][place] for place in places]) / 1e9  # GFLOPs when leaving at each place
    full_gflops = flops["full"] / 1e9
    val_logits, val_labels = every_place(classifier, device_batches(classifier, dataset, splits.val, batch_size))
    if budget is None:
        chosen = choose_threshold(val_logits, val_labels, cost, rule, max_drop=max_drop)
    else:
        if not cost[0] / full_gflops <= budget <= 1.0:
            raise UserError(f"--budget {budget:g}: between {cost[0] / full_gflops:.3f} (every clip leaving at the first "
                            f"exit, {places[0]}) and 1 (the full model), as a fraction of the full model's GFLOPs per clip")
        chosen = choose_threshold(val_logits, val_labels, cost, rule, max_gflops=budget * full_gflops)
    test_batches = device_batches(classifier, dataset, splits.test, batch_size)
    logits, labels = every_place(classifier, test_batches)
    at = leave_at(logits, rule, chosen["threshold"])
    predicted = logits[at, np.arange(len(labels))].argmax(axis=1)
    gflops = float(cost[at].mean())
    singles = device_batches(classifier, dataset, splits.test[:LATENCY_CLIPS], 1)
    never = float(len(places)) if rule == "patience" else 2.0  # a threshold no exit reaches
    seconds_full, latency_full = _timings(classifier, test_batches, singles, never, rule)
    seconds_exit, latency_exit = _timings(classifier, test_batches, singles, chosen["threshold"], rule)
    names, classes = dataset.class_names, np.unique(labels)
    probs = torch.from_numpy(logits).softmax(dim=-1).numpy()
    report = {
        "checkpoint": str(classifier.path), "dataset": dataset.name, "protocol": classifier.config.data.protocol,
        "rule": rule, **({"budget": budget} if budget is not None else {"max_drop": max_drop}),
        "threshold": chosen["threshold"], "chosen_on": "val", "exits": places[:-1],
        "val": {**chosen, "clips": int(len(splits.val)), "full_top1": float((val_logits[-1].argmax(1) == val_labels).mean())},
        "test": {
            "clips": int(len(labels)),
            "top1_full": float((logits[-1].argmax(axis=1) == labels).mean()),
            "top1_early_exit": float((predicted == labels).mean()),
            "exit_share": {place: float((at == k).mean()) for k, place in enumerate(places)},
            "exit_share_per_class": {place: {names[c]: float((at[labels == c] == k).mean()) for c in classes}
                                     for k, place in enumerate(places)},
            "top1_alone": {place: float((logits[k].argmax(axis=1) == labels).mean()) for k, place in enumerate(places)},
            "ece": {place: expected_calibration_error(probs[k], labels) for k, place in enumerate(places)},
            "frames_counted": frames,
            "gflops_per_clip_full": full_gflops, "gflops_per_clip_early_exit": gflops,
            "gflops_if_leaving_at": dict(zip(places, cost.tolist())),
            "seconds_full": seconds_full, "seconds_early_exit": seconds_exit,
            "clips_per_second_full": len(labels) / seconds_full, "clips_per_second_early_exit": len(labels) / seconds_exit,
            "batch1_latency_ms_full": latency_full, "batch1_latency_ms_early_exit": latency_exit,
            "batch1_speedup": latency_full["mean"] / latency_exit["mean"],
            "compute_speedup": full_gflops / gflops,
        },
        "device": str(classifier.device), "batch_size": batch_size,
    }
    if out is not None:
        write_text(out, json.dumps(report, indent=2) + "\n")
        curves = {"val": sweep(val_logits, val_labels, cost, rule), "test": sweep(logits, labels, cost, rule)}
        _plot(Path(out).with_suffix(".png"), curves, report)
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


def _plot(path: Path, curves: dict[str, list[dict]], report: dict) -> None:
    """Top-1 against GFLOPs per clip over every threshold, validation and test, the chosen one marked."""
    from matplotlib.figure import Figure  # a second of import time, paid only here

    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for split, rows in curves.items():
        ax.plot([r["gflops"] for r in rows], [100 * r["top1"] for r in rows], label=split)
    t = report["test"]
    ax.plot([t["gflops_per_clip_early_exit"]], [100 * t["top1_early_exit"]], "o", color="black",
            label=f"chosen on val: {report['rule']} >= {report['threshold']:.3g}")
    ax.plot([t["gflops_per_clip_full"]], [100 * t["top1_full"]], "s", color="grey", label="full model (test)")
    ax.set(xlabel="GFLOPs per clip", ylabel="top-1 %",
           title=f"{report['dataset']}: early exits at {', '.join(report['exits'])}")
    ax.legend(fontsize=8, loc="lower right")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
