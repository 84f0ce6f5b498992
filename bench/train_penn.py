"""Real-data benchmark: CascadeFormer 1.0 on Penn Action with the CPU-sized preset.

Prepares Penn Action from the shared labels (unless --data points to a prepared copy), pretrains,
finetunes, evaluates on the official test split, and prints the test accuracy and wall times.

    python bench/train_penn.py [--raw ../shared/datasets/penn_action] [--out bench_out/penn]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cascade_cli.config import load_config
from cascade_cli.data.penn import prepare_penn
from cascade_cli.evaluate import evaluate
from cascade_cli.progress import Reporter
from cascade_cli.training import finetune, pretrain

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, default=ROOT.parent / "shared" / "datasets" / "penn_action")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_out" / "penn")
    parser.add_argument("--preset", default="penn_action-cpu")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    reporter = Reporter()
    times = {}

    data = args.out / "data"
    started = time.perf_counter()
    if not (data / "dataset.yaml").is_file():
        prepare_penn(args.raw, data, reporter=reporter)
    times["prepare"] = time.perf_counter() - started

    cfg = load_config(args.preset, args.sets, base={"data": {"path": str(data)}})
    for stage, run in (("pretrain", pretrain), ("finetune", finetune)):
        started = time.perf_counter()
        run_dir = args.out / stage
        if stage == "finetune":
            cfg.finetune.pretrained = str(args.out / "pretrain")
        run(cfg, run_dir, reporter, resume=(run_dir / "config.yaml").is_file())
        times[stage] = time.perf_counter() - started
    report = evaluate(args.out / "finetune")

    print(f"Penn Action test top-1 {100 * report['top1']:.2f} %, top-5 {100 * report['top5']:.2f} % "
          f"({report['clips']} clips; model of epoch {report['model']['epoch']}, {report['model']['selected_by']})")
    print("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
          + f", total {sum(times.values()):.0f} s")


if __name__ == "__main__":
    main()
