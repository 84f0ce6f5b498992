"""Training throughput and peak memory: our default loop against the paper recipe's, same model.

    ours   what `cascade finetune` does by default: length-bucketed batches of --batch clips (32 for
           Penn), on CPU cut by the auto frame budget for clips of their own length (batch x mean
           length, data.max_frames_per_batch=-1), padding masks, amp=auto (bf16 on CUDA and on CPUs
           with bf16 matrix hardware), fused AdamW
    clips  ours in batches of --batch clips whatever their length (data.max_frames_per_batch=0):
           what the frame budget is worth (CPU, Penn; on GPUs ours has no budget)
    fp32   ours in float32 (amp=off): what bf16 is worth (where amp=auto picks it)
    torch-dropout  ours with PyTorch's dropout instead of the cheaper CPU masks (fast_cpu_dropout=false)
    compile  ours with the model under torch.compile (--arms ... compile; compilation is untimed warm-up)
    paper  random batches of the official batch size (4 for Penn, 64 for NTU) padded to the longest
           clip, no masks, float32

for Penn 1.0 (d=256, 4+4 layers, variable lengths: the official training split of a prepared
dataset at --data, else a lognormal with Penn's median and range) and NTU60-CS 1.0 (768, 16+16,
64 frames, batches of --ntu-batch; --small: the Penn-sized model on NTU inputs). On CPU NTU runs a
few steps only. MFU (GPU) is against the dense bf16 peak of the GPU's name, or --peak-tflops.

    python bench/train_throughput.py --configs penn --samples 0 --threads 1     # whole Penn epoch
    python bench/train_throughput.py --device cuda --ntu-steps 20 --repeat 3    # a GPU
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from cascade_cli.runtime import choose_precision
from cascade_cli.training.loop import frame_budget
from _common import (PENN_DATA, bench_device, common_args, median_run, our_loop, paper_loop, peak_bf16_tflops,
                     penn_lengths, print_table, set_threads, spec, write_json)

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
    parser.add_argument("--budget", type=int, default=-1, help="data.max_frames_per_batch of ours (-1: auto)")
    parser.add_argument("--samples", type=int, default=0, help="timed Penn clips per arm (0: the whole epoch)")
    parser.add_argument("--ntu-batch", type=int, default=0, help="our NTU batch size (0: the paper's, 64)")
    parser.add_argument("--ntu-steps", type=int, default=2, help="timed NTU steps per arm")
    parser.add_argument("--small", action="store_true", help="NTU inputs through the Penn-sized model")
    parser.add_argument("--repeat", type=int, default=1, help="runs per arm, alternating arms; medians reported")
    parser.add_argument("--arms", nargs="+", default=["ours", "clips", "fp32", "torch-dropout", "paper"],
                        choices=["ours", "clips", "fp32", "torch-dropout", "compile", "paper"],
                        help="arms to run where they apply (paper always runs: the ratios are against it)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="accelerator bf16 peak for MFU "
                        "[default: looked up by the GPU's name]")
    common_args(parser, "train_throughput")
    args = parser.parse_args()
    set_threads(args.threads)
    device = bench_device(args.device)
    peak, device_name = peak_bf16_tflops(device)
    peak = args.peak_tflops or peak
    wanted = set(args.arms) | {"paper"}

    cases, source = [], None
    if "penn" in args.configs:
        lengths, source = penn_lengths(args.data)
        cases.append((spec("penn"), lengths, args.batch, args.samples, 2))
    if "ntu" in args.configs:
        # NTU clips all have 64 frames, so an "epoch" of warm-up and timed batches suffices.
        ntu = spec("ntu_cs", args.small)
        batch = args.ntu_batch or ntu.paper_batch
        cases.append((ntu, np.full(max(batch, ntu.paper_batch) * (2 + args.ntu_steps), ntu.frames), batch, 0, 2))

    rows, auto = [], choose_precision("auto", device).name.replace("bfloat16", "bf16").replace("float32", "fp32")
    for s, lengths, batch, samples, warmup in cases:
        kw = {"warmup": warmup, "peak_tflops": peak or 0.0}
        ours_budget = frame_budget(args.budget, lengths, batch, s.frames, device)[0]
        arms = {"ours": (lambda: our_loop(s, lengths, device, samples, batch, args.budget, **kw),
                         str(batch) + (f", {ours_budget} fr" if ours_budget else ""), auto)}
        if ours_budget:
            arms["clips"] = (lambda: our_loop(s, lengths, device, samples, batch, 0, **kw), str(batch), auto)
        if auto != "fp32":
            arms["fp32"] = (lambda: our_loop(s, lengths, device, samples, batch, args.budget, amp="off", **kw),
                            arms["ours"][1], "fp32")
        if device.type == "cpu":
            arms["torch-dropout"] = (lambda: our_loop(s, lengths, device, samples, batch, args.budget,
                                                      fast_dropout=False, **kw), arms["ours"][1], auto)
        arms["compile"] = (lambda: our_loop(s, lengths, device, samples, batch, args.budget, compile=True, **kw),
                           arms["ours"][1], auto)
        arms["paper"] = (lambda: paper_loop(s, lengths, device, samples, **kw), str(s.paper_batch), "fp32")
        arms = {arm: a for arm, a in arms.items() if arm in wanted}
        runs = {arm: [] for arm in arms}
        for _ in range(args.repeat):  # alternating, so that load drift on a shared machine hits every arm
            for arm, (run, _, _) in arms.items():
                runs[arm].append(run())
        results = {arm: median_run(r, "samples_per_s") for arm, r in runs.items()}
        for arm, r in results.items():
            rows.append({"config": s.name, "arm": arm, "batch": arms[arm][1], "precision": arms[arm][2], **r,
                         "speedup": r["samples_per_s"] / results["paper"]["samples_per_s"]})

    print_table(f"Training throughput on {device_name} ({torch.get_num_threads()} threads), median of {args.repeat} "
                f"run(s)" + (f"; Penn lengths: {source}" if source else "")
                + (f"; MFU against {peak:g} TFLOP/s" if peak else ""), rows, COLUMNS)
    write_json(args.json, {"device": str(device), "device_name": device_name, "peak_tflops": peak,
                           "penn_lengths": source, "rows": rows})


if __name__ == "__main__":
    main()
