"""Code shared by the benchmarks: model sizes, clip lengths, FLOP counts, peak memory, the two
training loops being compared (ours and the paper recipe's), and table / JSON output.

Training steps run on random tensors shaped like the real clips: the benchmarks time the model and
the batching, not the data pipeline, which is the same in both loops.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from cascade_cli.config import Config, ModelConfig, load_config
from cascade_cli.data.penn import prepare_penn
from cascade_cli.data.sampler import LengthBucketSampler, padding_ratio
from cascade_cli.model import build_classifier, padding_mask
from cascade_cli.progress import Reporter
from cascade_cli.data.splits import run_splits
from cascade_cli.runtime import choose_precision
from cascade_cli.training.fast_dropout import use_fast_dropout
from cascade_cli.training.loop import frame_budget

ROOT = Path(__file__).resolve().parents[1]
PENN_RAW = ROOT.parent / "shared" / "datasets" / "penn_action"
PENN_DATA = ROOT / "bench_out" / "penn" / "data"
PENN_MEDIAN, PENN_MIN, PENN_MAX, PENN_TRAIN_CLIPS = 56, 18, 663, 1195  # reference B.8


@dataclass(frozen=True)
class Spec:
    """A benchmarked configuration: model, input shape, and the batch size of its official recipe."""

    name: str
    model: ModelConfig
    joints: int
    channels: int
    classes: int
    paper_batch: int
    frames: int  # fixed clip length; 0 = each clip its own length


def spec(name: str, small: bool = False) -> Spec:
    """penn: Table 1 Penn 1.0 (d=256, 4+4 layers, 8 heads); ntu_cs: Table 1 NTU60-CS 1.0 (768, 16+16,
    16 heads), or with small=True the same inputs through the Penn-sized model, for CPUs."""
    if name == "penn":
        cfg = load_config("table1/penn_action-1.0")
        return Spec("penn", cfg.model, 13, 2, 15, cfg.finetune.batch_size, 0)
    cfg = load_config("table1/ntu60_xsub-1.0",
                      ["model.d_model=256", "model.t1_layers=4", "model.t1_heads=8"] if small else [])
    return Spec("ntu_cs_small" if small else "ntu_cs", cfg.model, 25, 3, 60, cfg.finetune.batch_size,
                cfg.data.frames)


def penn_lengths(data: Path | None) -> tuple[np.ndarray, str]:
    """Frames of the clips the official Penn recipe trains on (its training split less 5 % validation)
    from a prepared dataset; without one, a lognormal draw with Penn's median and range."""
    if data is not None and (data / "dataset.yaml").is_file():
        splits = run_splits(load_config("table1/penn_action-1.0", base={"data": {"path": str(data)}}))
        return splits.dataset.lengths[splits.train].astype(np.int64), f"Penn Action training split of {data}"
    rng = np.random.default_rng(0)
    draw = np.round(rng.lognormal(np.log(PENN_MEDIAN), 0.68, PENN_TRAIN_CLIPS))
    return np.clip(draw, PENN_MIN, PENN_MAX).astype(np.int64), "lognormal draw (median 56, 18-663 frames)"


def forward_flops(m: ModelConfig, T: int, joints: int, channels: int, t1_only: bool = False) -> float:
    """Matmul FLOPs of one clip of T frames through CascadeFormer 1.0 (multiply-add = 2 FLOPs): per
    encoder layer Q/K/V/out projections 4·T·d²·2, attention scores and values 2·T²·d·2, FFN
    2·T·d·ffn·2; plus the frame embedding and, unless t1_only, T2 and the cross-attention."""
    d = m.d_model
    attention = 4 * T * d * d * 2 + 2 * T * T * d * 2
    layer = attention + 2 * T * d * m.ffn_dim * 2
    flops = T * joints * channels * d * 2 + m.t1_layers * layer
    if not t1_only:
        flops += (m.t2_layers or m.t1_layers) * layer + attention + (2 * T * d * d * 2 if m.fusion == "ffn" else 0)
    return float(flops)


def train_flops(s: Spec, frames: Iterable[int]) -> float:
    """Forward + backward (3 x forward) FLOPs of a set of clips of the given frame counts."""
    return sum(3 * forward_flops(s.model, int(T), s.joints, s.channels) for T in frames)


def _rss() -> tuple[int, int] | None:
    """(current, peak) resident bytes from /proc, or None where there is no /proc (not Linux)."""
    try:
        status = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    kib = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in status) if k in ("VmRSS", "VmHWM")}
    return kib["VmRSS"] * 1024, kib["VmHWM"] * 1024


class PeakMemory:
    """Peak memory of a block above what was in use when it began, in MiB.

    CUDA: the allocator's peak. CPU: the process's peak RSS (Linux VmHWM), reset at the start through
    /proc/self/clear_refs after freed heap is handed back to the OS (malloc_trim), so a block is not
    charged for what an earlier one left cached. Without that reset (not Linux), ru_maxrss can only
    show how far the block raised the process's lifetime peak, a lower bound.
    """

    def __init__(self, device: torch.device):
        self.device, self.mib = device, float("nan")

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
            self.base = _rss()[0]
        except (OSError, TypeError):
            self.base = None
        if self.base is None:
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            rss = _rss()
            peak = rss[1] if rss else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.mib = (peak - self.base) / 2**20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_batch(s: Spec, lengths: np.ndarray, device: torch.device, masks: bool, generator: torch.Generator):
    """Clips of the given lengths, zero-padded to the longest as collate_clips pads them, random labels;
    the padding mask only when masks is set (the official code has none)."""
    T = int(lengths.max())
    x = torch.randn(len(lengths), T, s.joints, s.channels, generator=generator)
    lens = torch.as_tensor(lengths)
    x[padding_mask(lens, T)] = 0.0
    labels = torch.randint(0, s.classes, (len(lengths),), generator=generator)
    return x.to(device), padding_mask(lens, T).to(device) if masks else None, labels.to(device)


def train_loop(s: Spec, lengths: np.ndarray, sampler: LengthBucketSampler, device: torch.device, *, masks: bool,
               amp: torch.dtype | None, fused: bool, samples: int, warmup: int = 2, peak_tflops: float = 0.0,
               fast_dropout: bool = True, compile: bool = False) -> dict:
    """Time finetuning steps (forward, cross-entropy, backward, AdamW step, fused or per-op) over one
    epoch of `sampler`, with the cheaper CPU dropout masks (fast_dropout, as the trainer's default
    config key fast_cpu_dropout) or PyTorch's, the model optionally under torch.compile (its
    compilation falls in the warm-up steps, untimed).

    The first `warmup` batches are untimed; then batches holding `samples` clips (0: the rest of the
    epoch; clips rather than steps, so both loops time the same share of it) are timed, and the epoch
    time is extrapolated by padded FLOPs: steps of a variable-length epoch differ in cost by orders of
    magnitude, so a few of them are no fair sample by count. MFU counts only real frames: work spent
    on padding is waste, and should show as such.
    """
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    batches = [np.asarray(b) for b in sampler]
    ends = np.cumsum([len(b) for b in batches[warmup:]])
    timed = batches[warmup:warmup + (int(np.searchsorted(ends, samples)) + 1 if samples else len(ends))]
    if not timed:
        raise ValueError(f"an epoch of {len(batches)} batches leaves none to time after {warmup} warm-up steps")

    def padded(bs: list[np.ndarray]) -> float:
        return train_flops(s, [lengths[b].max() for b in bs for _ in b])

    with PeakMemory(device) as memory:
        model = build_classifier(s.model, s.joints, s.channels, s.classes).to(device).train()
        if fast_dropout and device.type == "cpu":
            use_fast_dropout(model)
        net = torch.compile(model) if compile else model
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=1e-4, fused=fused or None)
        times = []
        for i, batch in enumerate(batches[:warmup] + timed):
            x, pad, labels = random_batch(s, lengths[batch], device, masks, generator)
            sync(device)
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = net(x, pad).float()
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
        del model, net, optimizer
    measured = sum(times)
    epoch_s = measured * padded(batches) / padded(timed)
    useful_tflops = train_flops(s, lengths[np.concatenate(timed)]) / measured / 1e12
    return {"batches": len(batches), "timed_steps": len(timed), "step_ms_median": 1e3 * float(np.median(times)),
            "epoch_s": epoch_s, "samples_per_s": len(lengths) / epoch_s,
            "padding": padding_ratio(batches, lengths), "peak_mib": memory.mib, "useful_tflops": useful_tflops,
            "mfu": useful_tflops / peak_tflops if peak_tflops else None}


def paper_loop(s: Spec, lengths: np.ndarray, device: torch.device, samples: int, **kw) -> dict:
    """The official recipe's loop: random batches of its batch size padded to their longest clip, no
    padding masks (pad_mask=None), float32, PyTorch's default optimizer update. It keeps our cheaper
    CPU dropout masks, so the ratios against it are conservative."""
    sampler = LengthBucketSampler(lengths, s.paper_batch, seed=0, bucket=False)
    return train_loop(s, lengths, sampler, device, masks=False, amp=None, fused=False, samples=samples, **kw)


def our_loop(s: Spec, lengths: np.ndarray, device: torch.device, samples: int, batch: int, budget: int = -1,
             amp: str = "auto", **kw) -> dict:
    """Our default path (what `cascade finetune` does): length-bucketed batches of `batch` clips, cut
    by the frame budget of data.max_frames_per_batch=`budget` (-1: the trainer's auto rule), with
    padding masks, in the precision of config key amp (auto: bf16 on CUDA and on CPUs with bf16
    matrix hardware, runtime.cpu_bf16_units), the fused optimizer update."""
    frames = frame_budget(budget, lengths, batch, s.frames, device)[0]
    sampler = LengthBucketSampler(lengths, batch, seed=0, max_frames_per_batch=frames)
    return {**train_loop(s, lengths, sampler, device, masks=True, amp=choose_precision(amp, device).dtype, fused=True,
                         samples=samples, **kw), "frame_budget": frames}


def median_run(runs: list[dict], key: str) -> dict:
    """The run with the median `key` (the lower middle of an even count), listing every run's value:
    timings on a shared machine are noisy."""
    ranked = sorted(runs, key=lambda r: r[key])
    return {**ranked[(len(ranked) - 1) // 2], f"{key}_runs": [r[key] for r in runs]}


def common_args(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default). On a machine shared with other busy "
                             "processes, fewer threads than cores avoids waiting on preempted ones, often by 10x")
    parser.add_argument("--json", type=Path, default=ROOT / "bench_out" / f"{name}.json")


def penn_recipe_args(parser: argparse.ArgumentParser, name: str) -> None:
    """Options of the benchmarks that train on Penn Action: data, preset, overrides, output folder."""
    parser.add_argument("--raw", type=Path, default=PENN_RAW, help="Penn Action root (holding labels/)")
    parser.add_argument("--data", type=Path, default=PENN_DATA, help="prepared Penn Action (made from --raw if missing)")
    parser.add_argument("--preset", default="penn_action-cpu")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_out" / name)
    common_args(parser, name)


def penn_recipe(args: argparse.Namespace, overrides: list[str]) -> Config:
    """The --preset config on the prepared Penn Action (prepared from --raw first if missing), after
    applying --threads."""
    set_threads(args.threads)
    if not (args.data / "dataset.yaml").is_file():
        prepare_penn(args.raw, args.data, reporter=Reporter())
    return load_config(args.preset, [*overrides, *args.sets], base={"data": {"path": str(args.data)}})


def set_threads(threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)


# Dense bf16 peak TFLOP/s (no sparsity) by a part of the name torch reports; the first match wins.
PEAK_BF16_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("GH200", 989.0), ("H200", 989.0), ("H100", 989.0),
                    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("A10G", 70.0),
                    ("A10", 125.0), ("RTX 4090", 165.0), ("L4", 121.0)]


def peak_bf16_tflops(device: torch.device) -> tuple[float | None, str]:
    """The accelerator's dense bf16 peak for MFU, and its name; None on a CPU or an unknown GPU."""
    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    return next((peak for part, peak in PEAK_BF16_TFLOPS if part in name), None), name


def bench_device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def print_table(title: str, rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """columns: (key, header, format spec); a missing or None value prints as '-'."""
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        cells.append(["-" if row.get(key) is None else format(row[key], fmt) for key, _, fmt in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    print(f"\n{title}")
    for n, r in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), **payload},
                               indent=2, default=float))
    print(f"\nwrote {path}")
