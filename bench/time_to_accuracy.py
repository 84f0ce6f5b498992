"""Time to accuracy on Penn Action: a fast recipe measured end to end, the paper recipe estimated.

Prepares Penn Action (unless --data holds a prepared copy), pretrains and finetunes with --preset
from scratch, and evaluates on the official test split. The paper recipe (1000 + 1000 epochs) cannot
be run here, so it is estimated on the same machine: the epoch time of its training loop (random
batches of 4, float32, no masks, d=256 4+4 layers, over its 1,195 training clips) times its epochs.
Pretraining runs only T1 and a linear decoder, so a second estimate charges pretraining epochs at
T1's share of the model's FLOPs.

    python bench/time_to_accuracy.py [--preset penn_action-cpu] [--paper-samples 400] [--threads 1]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from _common import (forward_flops, median_run, paper_loop, penn_lengths, penn_recipe, penn_recipe_args, print_table,
                     spec, write_json)
from cascade_cli.config import load_config, preset_info
from cascade_cli.evaluate import evaluate
from cascade_cli.progress import Reporter
from cascade_cli.runtime import resolve_device
from cascade_cli.training import finetune, pretrain

PAPER = "table1/penn_action-1.0"
COLUMNS = [("recipe", "recipe", ""), ("epochs", "epochs", ""), ("wall_s", "wall s", ".0f"), ("wall_h", "wall h", ".2f"),
           ("top1", "test top-1", ".2%"), ("source", "top-1 from", "")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    penn_recipe_args(parser, "time_to_accuracy")
    parser.add_argument("--paper-samples", type=int, default=0,
                        help="clips of the paper loop's epoch to time (0: the whole epoch), extrapolated by FLOPs")
    parser.add_argument("--repeat", type=int, default=1, help="paper-loop measurements; the median is used")
    args = parser.parse_args()
    reporter = Reporter()
    cfg = penn_recipe(args, [])
    runs = args.out / Path(args.preset).stem
    shutil.rmtree(runs, ignore_errors=True)  # a wall time means a run from scratch
    wall = {}
    for stage, run in (("pretrain", pretrain), ("finetune", finetune)):
        if stage == "finetune":
            cfg.finetune.pretrained = str(runs / "pretrain")
        started = time.perf_counter()
        run(cfg, runs / stage, reporter)
        wall[stage] = time.perf_counter() - started
    report = evaluate(runs / "finetune")

    penn = spec("penn")
    paper_cfg = load_config(PAPER)
    lengths, source = penn_lengths(args.data)
    device = resolve_device(cfg.device)
    paper = median_run([paper_loop(penn, lengths, device, args.paper_samples) for _ in range(args.repeat)], "epoch_s")
    t1_share = (sum(forward_flops(penn.model, T, penn.joints, penn.channels, t1_only=True) for T in lengths)
                / sum(forward_flops(penn.model, T, penn.joints, penn.channels) for T in lengths))
    pre, fine = paper_cfg.pretrain.epochs, paper_cfg.finetune.epochs
    paper_top1 = preset_info(PAPER)["paper_top1"] / 100
    rows = [
        {"recipe": f"{args.preset}, measured", "epochs": f"{cfg.pretrain.epochs} + {cfg.finetune.epochs}",
         "wall_s": sum(wall.values()), "top1": report["top1"], "source": "our test run"},
        {"recipe": f"{PAPER}, {pre + fine} x paper-loop epoch", "epochs": f"{pre} + {fine}",
         "wall_s": paper["epoch_s"] * (pre + fine), "top1": paper_top1, "source": "paper Table 1"},
        {"recipe": f"{PAPER}, pretraining at T1's FLOP share ({t1_share:.0%})", "epochs": f"{pre} + {fine}",
         "wall_s": paper["epoch_s"] * (fine + pre * t1_share), "top1": paper_top1, "source": "paper Table 1"},
    ]
    for row in rows:
        row["wall_h"] = row["wall_s"] / 3600
    print_table(f"Time to accuracy on Penn Action, {device}; {args.preset}: pretrain {wall['pretrain']:.0f} s + "
                f"finetune {wall['finetune']:.0f} s; paper-loop epoch {paper['epoch_s']:.0f} s (timed "
                f"{paper['timed_steps']} of {paper['batches']} steps, padding {paper['padding']:.0%}; {source})",
                rows, COLUMNS)
    write_json(args.json, {"device": str(device), "preset": args.preset, "wall_s": wall, "eval": report,
                           "paper_loop": paper, "paper_lengths": source, "median_length": float(np.median(lengths)),
                           "rows": rows})


if __name__ == "__main__":
    main()
