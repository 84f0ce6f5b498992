"""Class-incremental learning on real data: Split Penn Action (5 x 3 classes) and Split N-UCLA (5 x 2).

ft, joint, er, derpp and charon, the rehearsal methods at two buffer sizes, the same small backbone
and epochs for all (presets continual/penn_action-5x3 and continual/n_ucla-5x2), seeds 42, 43, ...;
FAA and forgetting as mean ± sample std over the seeds. Finished runs are reused.

    python bench/continual_real.py [--datasets penn nucla] [--seeds 1] [--buffers 50 200]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import ROOT, print_table, set_threads
from cascade_cli.config import load_config
from cascade_cli.continual.learner import run_continual
from cascade_cli.metrics import mean_std
from cascade_cli.progress import Reporter

SHARED = ROOT.parent / "shared" / "datasets"
PRESETS = {"penn": "continual/penn_action-5x3", "nucla": "continual/n_ucla-5x2"}


def prepared(name: str, out: Path) -> Path:
    data = out / "data" / name
    if not (data / "dataset.yaml").is_file():
        from cascade_cli.data.nucla import prepare_nucla
        from cascade_cli.data.penn import prepare_penn

        if name == "penn":
            prepare_penn(SHARED / "penn_action", data, workers=1)
        else:
            prepare_nucla(SHARED / "nw_ucla" / "all_sqe", data, workers=1)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=list(PRESETS), default=list(PRESETS))
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--buffers", nargs="+", type=int, default=[50, 200])
    parser.add_argument("--out", type=Path, default=ROOT / "bench_out" / "continual")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    arms = [("ft", 0), ("joint", 0), *((m, b) for b in args.buffers for m in ("er", "derpp", "charon"))]
    for name in args.datasets:
        data = prepared(name, args.out)
        rows = []
        for method, buffer in arms:
            results = []
            for s in range(args.seeds):
                run = args.out / name / f"{method}-{buffer}" / f"seed-{s}"
                if (run / "continual.json").is_file():
                    results.append(json.loads((run / "continual.json").read_text()))
                    continue
                cfg = load_config(PRESETS[name], [f"continual.method={method}", f"continual.buffer={max(buffer, 1)}",
                                                  f"seed={42 + s}"], base={"data": {"path": str(data)}})
                results.append(run_continual(cfg, run, Reporter(quiet=True),
                                             resume=(run / "config.yaml").is_file()))
            faa = mean_std([r["faa"] for r in results])
            forgetting = mean_std([r["forgetting"] for r in results]) if results[0]["forgetting"] is not None else None
            rows.append({"method": method, "buffer": buffer or "-", "faa": f"{100 * faa[0]:.2f} ± {100 * faa[1]:.2f}",
                         "forgetting": "-" if forgetting is None else f"{100 * forgetting[0]:.2f} ± {100 * forgetting[1]:.2f}",
                         "kib": sum(r["buffer_bytes"] for r in results) / len(results) / 1024,
                         "minutes": sum(sum(r["seconds_per_task"]) for r in results) / len(results) / 60})
        print_table(f"{name}: {args.seeds} seed(s), FAA and forgetting in %", rows,
                    [("method", "method", ""), ("buffer", "buffer", ""), ("faa", "FAA", ""),
                     ("forgetting", "forgetting", ""), ("kib", "buffer KiB", ".0f"), ("minutes", "min/run", ".1f")])


if __name__ == "__main__":
    main()
