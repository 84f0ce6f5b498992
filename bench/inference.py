"""Inference speed: model forward latency at batch 1, batched throughput, and `cascade predict` end to end.

    forward    eval mode, inference_mode, the padding mask predict passes; Penn 1.0 at its median
               clip length (56 frames), N-UCLA 1.1 at its 64 frames and NTU60-CS 1.0 at 64 frames
               (--small: the Penn-sized model on NTU inputs); float32, and bf16 autocast (predict
               --precision bf16) on CUDA and on CPUs with bf16 matrix hardware
    onnx       Penn 1.0 and N-UCLA 1.1 exported by `cascade export` (verified against PyTorch on the
               way; the largest logit difference is printed) and run by ONNX Runtime on the CPU with
               as many threads as torch (--threads 1: intra_op_num_threads=1), beside PyTorch eager
    predict    cascade_cli.predict.predict on one .npy clip (checkpoint load, preprocessing, forward)
               in this process, and the `cascade predict` command (adds interpreter and import start-up),
               with a tiny checkpoint trained here on the synthetic data

Random weights: latency does not depend on them.

    python bench/inference.py [--runs 50] [--batch 64] [--small] [--threads 1] [--json PATH]
    python bench/inference.py --devices cuda --no-onnx      # a GPU only
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import PENN_MEDIAN, ROOT, Spec, common_args, print_table, set_threads, spec, sync, write_json
from cascade_cli.checkpoint import save_checkpoint
from cascade_cli.config import load_config
from cascade_cli.data.format import open_dataset
from cascade_cli.data.registry import KNOWN_DATASETS
from cascade_cli.data.synthetic import make_synthetic
from cascade_cli.model import build_classifier, padding_mask
from cascade_cli.predict import predict
from cascade_cli.progress import Reporter
from cascade_cli.runtime import cpu_bf16_units
from cascade_cli.training import finetune, pretrain

TINY = ["model.d_model=32", "model.t1_layers=1", "model.t1_heads=2", "model.ffn_dim=64", "model.max_frames=64",
        "data.frames=32", "pretrain.epochs=1", "finetune.epochs=1", "pretrain.batch_size=16",
        "finetune.batch_size=16", "device=cpu"]
COLUMNS = [("what", "what", ""), ("runtime", "runtime", ""), ("device", "device", ""), ("precision", "precision", ""),
           ("batch", "batch", "d"), ("frames", "frames", "d"), ("ms_median", "ms (median)", ".2f"),
           ("clips_per_s", "clips/s", ".1f")]
EAGER, ORT = "PyTorch eager", "ONNX Runtime"
# The sizes exported to ONNX: their preset, and the dataset whose layout their checkpoint names.
EXPORTED = {"penn": ("table1/penn_action-1.0", "penn_action"), "nucla": ("table1/n_ucla-1.1", "nw_ucla")}


def nucla_spec() -> Spec:
    """Table 1 N-UCLA 1.1: d=256, 4+4 layers, 8 heads, 20 joints x 3, 10 classes, 64 frames."""
    cfg = load_config(EXPORTED["nucla"][0])
    return Spec("nucla", cfg.model, 20, 3, 10, cfg.finetune.batch_size, cfg.data.frames)


def median_ms(fn, runs: int, device: torch.device) -> float:
    fn()  # warm-up: allocator, kernels, lazy initialisation
    times = []
    for _ in range(runs):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def forward_rows(s: Spec, device: torch.device, batch: int, runs: int) -> list[dict]:
    frames = s.frames or PENN_MEDIAN
    torch.manual_seed(0)
    model = build_classifier(s.model, s.joints, s.channels, s.classes).to(device).eval()
    rows = []
    for precision in ["fp32"] + (["bf16"] if device.type == "cuda" or cpu_bf16_units() else []):
        for b in (1, batch):
            x, pad = clips(s, b, frames, device)

            @torch.inference_mode()
            def forward():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    model(x, pad)

            ms = median_ms(forward, runs if b == 1 else max(3, runs // 5), device)
            rows.append({"what": f"{s.name} forward", "runtime": EAGER, "device": str(device), "precision": precision,
                         "batch": b, "frames": frames, "ms_median": ms, "clips_per_s": 1e3 * b / ms})
    return rows


def clips(s: Spec, batch: int, frames: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (batch, frames, J, C) clips and their (all real) padding mask."""
    return (torch.randn(batch, frames, s.joints, s.channels, device=device),
            padding_mask(torch.full((batch,), frames, device=device), frames))


def onnx_rows(s: Spec, out: Path, batch: int, runs: int) -> list[dict]:
    """`cascade export` of a random-weight model of size `s`, timed in ONNX Runtime on the CPU with
    torch's thread count, on the inputs forward_rows times."""
    from cascade_cli.export import export_onnx, load_exported

    frames = s.frames or PENN_MEDIAN
    torch.manual_seed(0)
    model = build_classifier(s.model, s.joints, s.channels, s.classes)
    preset, dataset = EXPORTED[s.name]
    meta = {"kind": "finetune", "num_joints": s.joints, "in_channels": s.channels, "num_classes": s.classes,
            "class_names": [f"class{k}" for k in range(s.classes)], "dataset": dataset,
            "layout": KNOWN_DATASETS[dataset].layout.to_dict()}
    save_checkpoint(out / f"{s.name}.safetensors", model, load_config(preset), meta)
    metadata = export_onnx(out / f"{s.name}.safetensors", out / f"{s.name}-onnx", overwrite=True)
    print(f"{s.name}: exported, largest |logit difference| to PyTorch "
          f"{metadata['verification']['max_abs_logit_diff']:.3g}")
    backend = load_exported(out / f"{s.name}-onnx", threads=torch.get_num_threads()).backend
    rows = []
    for b in (1, batch):
        x, pad = clips(s, b, frames, torch.device("cpu"))
        ms = median_ms(lambda: backend.forward(x, pad), runs if b == 1 else max(3, runs // 5), torch.device("cpu"))
        rows.append({"what": f"{s.name} forward", "runtime": ORT, "device": "cpu", "precision": "fp32", "batch": b,
                     "frames": frames, "ms_median": ms, "clips_per_s": 1e3 * b / ms,
                     "max_abs_logit_diff": metadata["verification"]["max_abs_logit_diff"]})
    return rows


def tiny_checkpoint(out: Path) -> tuple[Path, Path]:
    """A one-epoch classifier on the synthetic data and one of its clips as (T, J, C) .npy."""
    data = out / "synthetic"
    if not (data / "dataset.yaml").is_file():
        make_synthetic(data, clips_per_class=8, seed=0)
    run = out / "finetune"
    if not (run / "checkpoints" / "best.safetensors").is_file():
        cfg = load_config(None, TINY, base={"data": {"path": str(data)}})
        reporter = Reporter(quiet=True)
        pretrain(cfg, out / "pretrain", reporter, resume=(out / "pretrain" / "config.yaml").is_file())
        cfg.finetune.pretrained = str(out / "pretrain")
        finetune(cfg, run, reporter, resume=(run / "config.yaml").is_file())
    clip = out / "clip.npy"
    np.save(clip, open_dataset(data).clip(0)[:, 0])  # first person: (T, J, C)
    return run, clip


def predict_rows(out: Path, runs: int) -> list[dict]:
    run, clip = tiny_checkpoint(out)
    frames = int(np.load(clip).shape[0])
    in_process = median_ms(lambda: predict(run, [clip], device="cpu"), runs, torch.device("cpu"))
    script = Path(sys.executable).with_name("cascade")  # absent where the package is not installed
    program = [str(script)] if script.is_file() else [sys.executable, "-m", "cascade_cli"]
    cli = [*program, "predict", str(run), str(clip), "--device", "cpu"]
    command = median_ms(lambda: subprocess.run(cli, check=True, capture_output=True), max(3, runs // 10),
                        torch.device("cpu"))
    common = {"runtime": EAGER, "device": "cpu", "precision": "fp32", "batch": 1, "frames": frames}
    return [{"what": "predict() tiny model", **common, "ms_median": in_process, "clips_per_s": 1e3 / in_process},
            {"what": "`cascade predict` tiny", **common, "ms_median": command, "clips_per_s": 1e3 / command}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50, help="timed runs at batch 1 (batched: a fifth)")
    parser.add_argument("--batch", type=int, default=64, help="batch of the throughput measurement")
    parser.add_argument("--small", action="store_true", help="NTU inputs through the Penn-sized model")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_out" / "inference")
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], default=["cpu", "cuda"],
                        help="where the forward rows run (cuda only where there is one)")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime rows (no `onnx` extra)")
    parser.add_argument("--no-predict", action="store_true", help="skip the predict rows")
    common_args(parser, "inference")
    args = parser.parse_args()
    set_threads(args.threads)

    rows = []
    sizes = [spec("penn"), nucla_spec(), spec("ntu_cs", args.small)]
    args.out.mkdir(parents=True, exist_ok=True)
    devices = [torch.device(d) for d in args.devices if d == "cpu" or torch.cuda.is_available()]
    for device in devices:
        for s in sizes:
            rows += forward_rows(s, device, args.batch, args.runs)
            if device.type == "cpu" and s.name in EXPORTED and not args.no_onnx:  # ONNX Runtime beside eager
                rows += onnx_rows(s, args.out, args.batch, args.runs)
    if not args.no_predict:
        rows += predict_rows(args.out, args.runs)
    print_table(f"Inference, median of {args.runs} runs at batch 1 ({torch.get_num_threads()} CPU threads)",
                rows, COLUMNS)
    write_json(args.json, {"rows": rows})


if __name__ == "__main__":
    main()
