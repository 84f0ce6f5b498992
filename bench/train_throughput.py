"""Training throughput and peak memory: our default loop against the paper recipe's, same model.

    ours   length-bucketed batches (--batch, 32 for Penn) with padding masks, amp=auto (bf16 on CUDA
           and on CPUs with AMX), fused AdamW: what `cascade finetune` does
    budget the same, batches cut by a frame budget (--budget frames, Penn only): bounded step memory
    torch-dropout  ours with PyTorch's dropout instead of the cheaper CPU masks (fast_cpu_dropout=false):
           isolates what that choice is worth (CPU only; on GPUs both are PyTorch's)
    paper  random batches of the official batch size (4 for Penn, 64 for NTU) padded to the longest
           clip, no masks, float32

for Penn 1.0 (d=256, 4+4 layers, variable lengths: the official training split of a prepared
dataset at --data, else a lognormal with Penn's median and range) and NTU60-CS 1.0 (768, 16+16,
64 frames; --small: the Penn-sized model on NTU inputs). On CPU NTU runs a few steps only.

    python bench/train_throughput.py [--data bench_out/penn/data] [--samples 160] [--repeat 3] [--small]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from cascade_cli.runtime import autocast_dtype
from _common import (PENN_DATA, bench_device, common_args, median_run, our_loop, paper_loop, penn_lengths,
                     print_table, set_threads, spec, write_json)

COLUMNS = [("config", "config", ""), ("arm", "arm", ""), ("batch", "batch", ""), ("precision", "precision", ""),
           ("padding", "padding", ".0%"), ("step_ms_median", "step ms", ".0f"), ("samples_per_s", "samples/s", ".1f"),
           ("epoch_s", "epoch s", ".1f"), ("peak_mib", "peak MiB", ".0f"), ("useful_tflops", "TFLOP/s", ".3f"),
           ("mfu", "MFU", ".1%"), ("speedup", "x paper", ".2f")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=PENN_DATA, help="prepared Penn Action for real clip lengths")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--configs", nargs="+", choices=["penn", "ntu"], default=["penn", "ntu"])
    parser.add_argument("--batch", type=int, default=32, help="our Penn batch size")
    parser.add_argument("--budget", type=int, default=2048, help="frames per Penn batch of the budget arm (0: skip)")
    parser.add_argument("--samples", type=int, default=0, help="timed Penn clips per arm (0: the whole epoch)")
    parser.add_argument("--ntu-steps", type=int, default=2, help="timed NTU steps per arm")
    parser.add_argument("--small", action="store_true", help="NTU inputs through the Penn-sized model")
    parser.add_argument("--repeat", type=int, default=1, help="runs per arm, alternating arms; medians reported")
    parser.add_argument("--no-dropout-arm", action="store_true", help="skip the torch-dropout arm on CPU")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="accelerator bf16 peak, for MFU")
    common_args(parser, "train_throughput")
    args = parser.parse_args()
    set_threads(args.threads)
    device = bench_device(args.device)
    peak = args.peak_tflops if device.type == "cuda" else 0.0

    cases, source = [], None
    if "penn" in args.configs:
        lengths, source = penn_lengths(args.data)
        cases.append((spec("penn"), lengths, args.batch, args.samples, 2, args.budget))
    if "ntu" in args.configs:
        # NTU clips all have 64 frames, so an "epoch" of one warm-up and the timed batches suffices.
        ntu = spec("ntu_cs", args.small)
        cases.append((ntu, np.full(ntu.paper_batch * (1 + args.ntu_steps), ntu.frames), ntu.paper_batch, 0, 1, 0))

    rows, amp = [], "bf16" if autocast_dtype("auto", device)[0] else "fp32"
    for s, lengths, batch, samples, warmup, budget in cases:
        kw = {"warmup": warmup, "peak_tflops": peak}
        arms = {"ours": lambda: our_loop(s, lengths, device, samples, batch, **kw),
                "paper": lambda: paper_loop(s, lengths, device, samples, **kw)}
        if budget:
            arms["budget"] = lambda: our_loop(s, lengths, device, samples, batch, budget, **kw)
        if device.type == "cpu" and not args.no_dropout_arm:
            arms["torch-dropout"] = lambda: our_loop(s, lengths, device, samples, batch, fast_dropout=False, **kw)
        labels = {"ours": (str(batch), amp), "paper": (str(s.paper_batch), "fp32"), "budget": (f"{budget} fr", amp),
                  "torch-dropout": (str(batch), amp)}
        runs = {arm: [] for arm in arms}
        for _ in range(args.repeat):  # alternating, so that load drift on a shared machine hits every arm
            for arm, run in arms.items():
                runs[arm].append(run())
        results = {arm: median_run(r, "samples_per_s") for arm, r in runs.items()}
        for arm, r in results.items():
            rows.append({"config": s.name, "arm": arm, "batch": labels[arm][0], "precision": labels[arm][1], **r,
                         "speedup": r["samples_per_s"] / results["paper"]["samples_per_s"]})

    print_table(f"Training throughput on {device} ({torch.get_num_threads()} threads), median of {args.repeat} "
                f"run(s)" + (f"; Penn lengths: {source}" if source else ""), rows, COLUMNS)
    write_json(args.json, {"device": str(device), "penn_lengths": source, "rows": rows})


if __name__ == "__main__":
    main()
