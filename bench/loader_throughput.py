"""Is the data loader ever the bottleneck? Loader-only samples/s vs training-step samples/s.

Iterates one training epoch of the real prepared Penn Action (memory-mapped frames, the Table 1
Penn pipeline: variable length, invisible joints zeroed, length-bucketed batches) with 0 and 2
DataLoader workers, then times training steps of the Penn 1.0 model (d=256, 4+4 layers) on the
same batches, as `cascade finetune` runs them (amp=auto, fused AdamW). The loader keeps up when
its samples/s is well above the model's.

    python bench/loader_throughput.py [--data bench_out/penn/data] [--steps 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cascade_cli.config import load_config
from cascade_cli.model import build_classifier, padding_mask
from cascade_cli.data.splits import run_splits
from cascade_cli.runtime import choose_precision
from cascade_cli.training.fast_dropout import use_fast_dropout
from cascade_cli.training.loop import make_loader
from cascade_cli.training.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]


def loader_rate(cfg, splits, workers: int) -> tuple[float, int]:
    cfg.workers = workers
    loader = make_loader(splits.dataset, splits.train, cfg, train=True, batch_size=32, epoch=1)
    started, seen = time.perf_counter(), 0
    for batch in loader:
        seen += len(batch.labels)
    return seen / (time.perf_counter() - started), seen


def model_rate(cfg, splits, steps: int) -> float:
    cfg.workers = 0
    batches = [b for _, b in zip(range(steps + 2), make_loader(splits.dataset, splits.train, cfg, train=True,
                                                               batch_size=32, epoch=1))]
    model = use_fast_dropout(build_classifier(cfg.model, 13, 2, splits.dataset.num_classes).train())
    optimizer = build_optimizer(list(model.parameters()), cfg.finetune.optim)
    amp = choose_precision(cfg.amp, torch.device("cpu")).dtype

    def step(batch):
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            logits = model(batch.x, padding_mask(batch.lengths, batch.x.shape[1])).float()
        loss = F.cross_entropy(logits, batch.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for batch in batches[:2]:  # warm-up
        step(batch)
    started, seen = time.perf_counter(), 0
    for batch in batches[2:]:
        step(batch)
        seen += len(batch.labels)
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "bench_out" / "penn" / "data")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", type=Path, default=ROOT / "bench_out" / "loader_throughput.json")
    args = parser.parse_args()
    cfg = load_config("table1/penn_action-1.0", base={"data": {"path": str(args.data)}})
    splits = run_splits(cfg)
    rows = {f"loader, {w} workers": loader_rate(cfg, splits, w)[0] for w in (0, 2)}
    rows["training steps, Penn 1.0 model"] = model_rate(cfg, splits, args.steps)
    print(f"{'what':<34} {'samples/s':>10}")
    for name, rate in rows.items():
        print(f"{name:<34} {rate:>10.1f}")
    slowest_loader = min(v for k, v in rows.items() if k.startswith("loader"))
    print(f"loader / model: {slowest_loader / rows['training steps, Penn 1.0 model']:.1f}x "
          "(> 1: the loader is not the bottleneck)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
