"""A live pose stream, replayed: Penn Action test clips played back to back as JSON lines at 30 fps
into `cascade predict --stream`'s live path (a reader thread, windows skipped when the model falls
behind), on one CPU thread, with and without the early exit after T1.

The classifier is the `known` Penn Action run of bench/anomaly_real.py (the demo preset's small
CascadeFormer 1.0) and its exit head from bench/exits_real.py, at the threshold that bench chose on
validation (top probability, at most half a point lost); with --paper-size also the paper's Penn
Action 1.0 model (d 256, 4 + 4 layers) with random weights, for its latency. Prints, per stride:
windows classified per second, skipped windows, and latency from a window's last frame arriving to
its answer (p50, p95). Goal (issue 14): keep up with 30 fps at stride 4 with p95 under 100 ms.

    python bench/stream.py [--seconds 20] [--window 32] [--strides 1 2 4 8] [--paper-size]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from _common import ROOT, print_table, set_threads
from cascade_cli.data.format import open_dataset
from cascade_cli.data.splits import run_splits
from cascade_cli.inference import load_classifier
from cascade_cli.stream.classify import StreamSummary, classify_stream, stream_classifier

EXITS = ROOT / "bench_out" / "exits"


def frame_lines(dataset, indices, frames: int) -> list[str]:
    """`frames` JSON lines of the clips `indices` back to back, each [x, y, visibility] per joint."""
    lines: list[str] = []
    for i in indices:
        clip, seen = dataset.clip(int(i)), dataset.clip_confidence(int(i))  # (T, M, J, 2), (T, M, J)
        joints = np.concatenate([clip, seen[..., None]], axis=-1).round(2)
        lines += [json.dumps({"persons": frame.tolist()}) for frame in joints]
        if len(lines) >= frames:
            return lines[:frames]
    return lines


def at_fps(lines: list[str], fps: float):
    """The lines, each no earlier than its time in a `fps` stream that starts now."""
    start = time.perf_counter()
    for k, line in enumerate(lines):
        delay = start + k / fps - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield line


def paper_sized(demo, dataset, out: Path) -> Path:
    """The paper's Penn Action 1.0 model (preset table1/penn_action-1.0: d 256, 4 + 4 layers, FFN 2048,
    each window at its own length) with seeded random weights, saved as a checkpoint: for timing
    only, its predictions mean nothing."""
    import torch

    from cascade_cli.checkpoint import save_checkpoint
    from cascade_cli.data.pipeline import model_input_shape
    from cascade_cli.lifecycle import stage_config
    from cascade_cli.model import build_classifier

    cfg = stage_config("pretrain", preset="table1/penn_action-1.0", data=dataset.path)
    shape = model_input_shape(dataset, cfg.data)
    torch.manual_seed(0)
    model = build_classifier(cfg.model, *shape, len(demo.class_names))
    meta = {**demo.meta, "num_joints": shape[0], "in_channels": shape[1], "variant": cfg.model.variant}
    save_checkpoint(out, model, cfg, meta)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the replayed stream")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--strides", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--paper-size", action="store_true", help="also time the paper's Penn 1.0 model "
                        "(random weights: latency only, no exits)")
    args = parser.parse_args()
    set_threads(args.threads)
    checkpoint, chosen = EXITS / "penn.t1.safetensors", EXITS / "penn.t1.max_softmax-max_drop0.5.json"
    if not (checkpoint.is_file() and chosen.is_file()):
        raise SystemExit(f"{checkpoint} and {chosen.name}: run bench/exits_real.py first")
    report = json.loads(chosen.read_text())
    classifier = load_classifier(checkpoint, "cpu")
    dataset = open_dataset(classifier.config.data.path)
    lines = frame_lines(dataset, run_splits(classifier.config, dataset).test, int(args.seconds * args.fps))
    paths = [("demo, full model", classifier, None),
             (f"demo, exit after T1 >= {report['threshold']:.3f}", classifier, report["threshold"])]
    if args.paper_size:
        (ROOT / "bench_out" / "stream").mkdir(parents=True, exist_ok=True)
        paper = paper_sized(classifier, dataset, ROOT / "bench_out" / "stream" / "penn_action-1.0-random.safetensors")
        paths.append(("paper Penn 1.0 size, random weights", load_classifier(paper, "cpu"), None))
    rows = []
    for stride in args.strides:
        for label, model, threshold in paths:
            streamer = stream_classifier(model, exit_threshold=threshold)
            summary, started = StreamSummary(), time.perf_counter()
            records = list(classify_stream(streamer, at_fps(lines, args.fps), window=args.window, stride=stride,
                                           live=True, summary=summary))
            wall = time.perf_counter() - started
            due = (len(lines) - args.window) // stride + 1
            ms = np.array(summary.latency_ms)
            left = sum(r.get("exit", "final") != "final" for r in records)
            rows.append({"stride": stride, "path": label, "due": due, "classified": summary.windows,
                         "skipped": summary.skipped, "per_s": summary.windows / wall,
                         "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
                         "left": 100 * left / max(summary.windows, 1), "wall": wall})
    print_table(f"{len(lines)} frames at {args.fps:g} fps, window {args.window}, {args.threads} thread(s), "
                "Penn Action", rows, [
        ("stride", "stride", ""), ("path", "path", ""), ("due", "windows due", ""), ("classified", "classified", ""),
        ("skipped", "skipped", ""), ("per_s", "windows/s", ".1f"), ("p50", "p50 ms", ".1f"), ("p95", "p95 ms", ".1f"),
        ("left", "left early %", ".0f"), ("wall", "wall s", ".1f")])


if __name__ == "__main__":
    main()
