"""Anomaly alerts on real data: Penn Action and N-UCLA, both protocols, with classifiers trained here.

    unknown actions (open set)   per seeded draw, classes held out of classifier training and of
                                 the bank (3 of 15 on Penn Action, 2 of 10 on N-UCLA) are the
                                 anomalies; 3 draws, mean ± std (sample std) over them
    known abnormal classes       a classifier of every class; the abnormal set named below

Each classifier is the demo preset's small CascadeFormer 1.0 (`cascade demo --data`), trained with
the dataset's first protocol. Detectors are tuned with the or2 rule and the direct search on their
validation part, under the default costs (tp=5, fp=-3, fn=-10, tn=0), and evaluated on the test split.

    python bench/anomaly_real.py [--datasets penn nucla] [--draws 3] [--out bench_out/anomaly]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from _common import ROOT, print_table, set_threads
from cascade_cli import lifecycle
from cascade_cli.anomaly.alerts import evaluate, tune
from cascade_cli.anomaly.detector import fit_detector, open_detector
from cascade_cli.anomaly.statistics import STATISTICS
from cascade_cli.data.format import open_dataset
from cascade_cli.metrics import mean_std

SHARED = ROOT.parent / "shared" / "datasets"
RAW = {"penn": SHARED / "penn_action", "nucla": SHARED / "nw_ucla" / "all_sqe"}
HELD_OUT = {"penn": 3, "nucla": 2}
# Protocol (a): abnormal sets stated here (a reason each, since these datasets have no such labels).
KNOWN_ABNORMAL = {"penn": "jumping_jacks,pushup,situp",  # exercise at a sports venue's security camera
                  "nucla": "drop trash,throw"}  # littering and throwing in a monitored room


def prepared(name: str, out: Path) -> Path:
    data = out / "data" / name
    if not (data / "dataset.yaml").is_file():
        from cascade_cli.data.nucla import prepare_nucla
        from cascade_cli.data.penn import prepare_penn

        (prepare_penn if name == "penn" else prepare_nucla)(RAW[name], data, workers=1)
    return data


def one_run(data: Path, run: Path, overrides: list[str], abnormal: str | None) -> dict:
    started = time.perf_counter()
    cfg = lifecycle.stage_config("pretrain", preset="demo", data=data, overrides=overrides)
    cfg.data.protocol = cfg.data.protocol or next(iter(open_dataset(data).protocols))
    lifecycle.run_stages(cfg, run / "pretrain", run / "finetune")
    detector_dir = run / "detector"
    if not detector_dir.exists():
        fit_detector(run / "finetune", detector_dir, abnormal=abnormal)
    detector = open_detector(detector_dir)
    tune(detector, rule="or2", search="direct")
    report = evaluate(detector)
    return {**report, "wall_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=list(RAW), default=list(RAW))
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench_out" / "anomaly")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    summary = {}
    for name in args.datasets:
        data = prepared(name, args.out)
        classes = open_dataset(data).class_names
        runs = []
        for draw in range(args.draws):
            held = np.random.default_rng(draw).choice(len(classes), HELD_OUT[name], replace=False)
            names = sorted(classes[c] for c in held)
            report = one_run(data, args.out / name / f"open-{draw}", [f"data.exclude_classes={','.join(names)}"], None)
            runs.append({"held_out": names, **report})
        known = one_run(data, args.out / name / "known", [], KNOWN_ABNORMAL[name])
        summary[name] = {"open_set": runs, "known": known}
        rows = []
        for stat in STATISTICS:
            mean, std = mean_std([r["auroc"][stat] for r in runs])
            rows.append({"what": f"AUROC {stat}", "open": f"{mean:.3f} ± {std:.3f}", "known": f"{known['auroc'][stat]:.3f}"})
        for policy in runs[0]["policies"]:
            mean, std = mean_std([r["policies"][policy]["mean_cost"] for r in runs])
            rows.append({"what": f"test cost, {policy}", "open": f"{mean:.3f} ± {std:.3f}",
                         "known": f"{known['policies'][policy]['mean_cost']:.3f}"})
        print_table(f"{name}: unknown actions ({args.draws} draws of {HELD_OUT[name]} held-out classes: "
                    f"{'; '.join(', '.join(r['held_out']) for r in runs)}) and known abnormal classes "
                    f"({KNOWN_ABNORMAL[name]})", rows, [("what", "", ""), ("open", "unknown actions", ""),
                                                        ("known", "known abnormal", "")])
    (args.out).mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    print(f"\nwrote {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
