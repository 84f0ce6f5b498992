"""Does length bucketing cost accuracy? Penn Action at its own clip lengths, bucketed vs. random batches.

Pretrains once on variable-length Penn Action (data.frames=0: every clip keeps its 18-663
frames, padded per batch and masked), then finetunes twice from that T1 with the same seed,
once with length-bucketed batches and once with random ones, and evaluates both on the official
test split. Padding masks make each clip's logits independent of its batch mates, so the two runs
differ only in which clips share a batch (the gradient noise), not in what the model computes.

    python bench/bucketing_accuracy.py [--preset penn_action-cpu] [--set finetune.epochs=20] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time

import numpy as np

from _common import penn_recipe, penn_recipe_args, print_table, write_json
from cascade_cli.data.sampler import LengthBucketSampler, padding_ratio
from cascade_cli.evaluate import evaluate
from cascade_cli.progress import Reporter
from cascade_cli.data.splits import run_splits
from cascade_cli.training import finetune, pretrain

COLUMNS = [("batching", "batching", ""), ("padding", "padding", ".0%"), ("finetune_s", "finetune s", ".0f"),
           ("val_top1", "best val top-1", ".2%"), ("top1", "test top-1", ".2%"), ("macro", "class mean", ".2%")]
VARIABLE_LENGTH = ["data.frames=0", "model.max_frames=700", "data.max_frames_per_batch=0"]  # batches of 32 clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    penn_recipe_args(parser, "bucketing_accuracy")
    args = parser.parse_args()
    reporter = Reporter()
    cfg = penn_recipe(args, VARIABLE_LENGTH)
    shutil.rmtree(args.out, ignore_errors=True)
    pretrain(cfg, args.out / "pretrain", reporter)

    splits = run_splits(cfg)
    lengths = splits.dataset.lengths
    rows = []
    for bucketing in (True, False):
        arm = copy.deepcopy(cfg)
        arm.data.bucketing = bucketing
        arm.finetune.pretrained = str(args.out / "pretrain")
        run = args.out / ("bucketed" if bucketing else "random")
        started = time.perf_counter()
        finetune(arm, run, reporter)
        seconds = time.perf_counter() - started
        report = evaluate(run)
        sampler = LengthBucketSampler(lengths[splits.train], arm.finetune.batch_size, seed=arm.seed,
                                      bucket=bucketing, max_frames_per_batch=arm.data.max_frames_per_batch)
        best = max(json.loads(line)["val_top1"] for line in (run / "metrics.jsonl").read_text().splitlines())
        rows.append({"batching": "length-bucketed" if bucketing else "random", "finetune_s": seconds,
                     "padding": padding_ratio([np.asarray(b) for b in sampler], lengths[splits.train]),
                     "val_top1": best, "top1": report["top1"], "macro": report["macro"]})

    print_table(f"Bucketing and accuracy: {args.preset} at variable length, seed {cfg.seed}, "
                f"{cfg.finetune.epochs} finetuning epochs", rows, COLUMNS)
    print(f"\ntest top-1 difference (bucketed - random): {100 * (rows[0]['top1'] - rows[1]['top1']):+.2f} points")
    write_json(args.json, {"preset": args.preset, "sets": args.sets, "rows": rows})


if __name__ == "__main__":
    main()
