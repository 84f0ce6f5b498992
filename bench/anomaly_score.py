"""What the anomaly statistics add to a batch-1 prediction, at the scale of NTU-AD.

A CascadeFormer 1.0 of the NTU60 cross-subject size (d=768, 16 + 16 layers; random weights: only
the time matters) and a detector whose normal bank holds 32,000 synthetic unit embeddings of 768
values (the size of NTU-AD's bank). For the same clip, batch 1, the model loaded once:

    predict      preprocessing and the forward pass (what `cascade predict` does per clip)
    statistics   the seven statistics against the bank and the policy's decision
    score        both (what `cascade anomaly score` does per clip)

    python bench/anomaly_score.py [--runs 20] [--threads 1] [--bank 32000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from _common import common_args, print_table, set_threads, write_json
from cascade_cli.anomaly.detector import BANK, CLIPS, MANIFEST, POLICY, VALIDATION, _write, open_detector, sha256_file
from cascade_cli.anomaly.policy import Policy
from cascade_cli.anomaly.statistics import NormalBank, clip_statistics
from cascade_cli.checkpoint import save_checkpoint
from cascade_cli.config import load_config
from cascade_cli.data.registry import NTU60
from cascade_cli.inference import load_classifier, score_inputs
from cascade_cli.model import build_classifier


def make_detector(folder: Path, bank_size: int, d: int) -> Path:
    """An NTU60-CS-sized checkpoint and a detector with a synthetic bank over it."""
    cfg = load_config("table1/ntu60_xsub-1.0", ["device=cpu"])
    model = build_classifier(cfg.model, 25, 3, NTU60.num_classes)
    checkpoint = folder / "ntu60_xsub-1.0.safetensors"
    save_checkpoint(checkpoint, model, cfg, {"kind": "finetune", "dataset": "ntu60", "protocol": "xsub",
                                             "layout": NTU60.layout.to_dict(), "class_names": list(NTU60.class_names),
                                             "num_joints": 25, "in_channels": 3, "num_classes": 60, "epoch": 0})
    rng = np.random.default_rng(0)
    bank = NormalBank.fit(rng.normal(size=(bank_size, d)).astype(np.float32), rng.integers(0, 48, bank_size))
    manifest = {"checkpoint": str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint), "k": 5,
                "abnormal": list(range(48, 60)), "class_names": list(NTU60.class_names)}
    empty = {"stat.knn": np.zeros(1), "abnormal": np.zeros(1, np.int8), "predicted": np.zeros(1, np.int64)}
    _write(folder / "detector", manifest, {BANK: bank.arrays(), VALIDATION: empty,
                                           CLIPS: {"bank": np.zeros(1, np.int64)}}, overwrite=False)
    policy = Policy("tuned", {"knn": 1.2, "mahalanobis": 40.0})
    (folder / "detector" / POLICY).write_text(yaml.safe_dump({"policies": [policy.to_dict()]}))
    return folder / "detector"


def median_ms(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--bank", type=int, default=32_000)
    common_args(parser, "anomaly_score")
    args = parser.parse_args()
    set_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        detector = open_detector(make_detector(folder, args.bank, 768))
        classifier = load_classifier(detector.manifest["checkpoint"], "cpu")
        clip = folder / "clip.npy"
        np.save(clip, np.random.default_rng(1).normal(size=(64, 25, 3)).astype(np.float32))
        policy = Policy.from_dict(yaml.safe_load((detector.path / POLICY).read_text())["policies"][0])
        scores = score_inputs(classifier, [clip])

        def decide():
            stats = clip_statistics(scores.logits, scores.embeddings, detector.bank)
            return policy.decide(stats, scores.predictions)

        predict_ms = median_ms(lambda: score_inputs(classifier, [clip]), args.runs)
        stats_ms = median_ms(decide, args.runs)
    rows = [{"what": "predict (preprocess + forward)", "ms": predict_ms, "share": 1.0},
            {"what": "statistics + decision", "ms": stats_ms, "share": stats_ms / predict_ms},
            {"what": "anomaly score (both)", "ms": predict_ms + stats_ms, "share": 1 + stats_ms / predict_ms}]
    print_table(f"Batch-1 anomaly scoring, NTU60-CS 1.0 size (d=768, 16+16 layers), bank {args.bank} x 768, "
                f"median of {args.runs}", rows, [("what", "what", ""), ("ms", "ms", ".1f"), ("share", "x predict", ".3f")])
    write_json(args.json, {"bank": args.bank, "rows": rows})


if __name__ == "__main__":
    main()
