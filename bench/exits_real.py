"""Early exits on real data: Penn Action and N-UCLA, exit heads fitted on a frozen classifier (after
T1, and after every encoder layer), the threshold chosen on validation, the cascade reported on test.

The classifiers are the `known` runs of bench/anomaly_real.py (the demo preset's small CascadeFormer,
every class, the dataset's first protocol), trained here first if that bench has not run. With the
exit after T1 each is reported three ways: top probability with at most half a point lost on
validation, entropy likewise, and top probability within 60 % of the full model's GFLOPs; with an
exit after every layer, by top probability and by patience, at most half a point lost; likewise for
exits after every layer trained jointly with the classifier (the same pretrained T1 finetuned again
with finetune.exit_loss_weight 0.5; its full model is that new run's).

    python bench/exits_real.py [--datasets penn nucla] [--out bench_out/exits]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import ROOT, print_table, set_threads
from anomaly_real import RAW, prepared
from cascade_cli import lifecycle
from cascade_cli.data.format import open_dataset
from cascade_cli.exits.fit import fit_exit_heads
from cascade_cli.exits.report import early_exit_report
from cascade_cli.inference import load_classifier

CHOICES = {"t1": [("max_softmax", {"max_drop": 0.5}), ("entropy", {"max_drop": 0.5}), ("max_softmax", {"budget": 0.6})],
           "layers": [("max_softmax", {"max_drop": 0.5}), ("patience", {"max_drop": 0.5})]}


def classifier_run(name: str, anomaly_out: Path) -> Path:
    data, run = prepared(name, anomaly_out), anomaly_out / name / "known"
    if not (run / "finetune" / "checkpoints" / "best.safetensors").is_file():
        cfg = lifecycle.stage_config("pretrain", preset="demo", data=data)
        cfg.data.protocol = cfg.data.protocol or next(iter(open_dataset(data).protocols))
        lifecycle.run_stages(cfg, run / "pretrain", run / "finetune")
    return run / "finetune"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=list(RAW), default=list(RAW))
    parser.add_argument("--anomaly-out", type=Path, default=ROOT / "bench_out" / "anomaly")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_out" / "exits")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)
    rows = []
    for name in args.datasets:
        finetuned = classifier_run(name, args.anomaly_out)
        for places, choices in CHOICES.items():
            started = time.perf_counter()
            checkpoint = fit_exit_heads(finetuned, args.out / f"{name}.{places}.safetensors", places=places)
            fit_s = time.perf_counter() - started
            classifier = load_classifier(checkpoint)
            dataset = open_dataset(classifier.config.data.path)
            for rule, choice in choices:
                rows.append(report_row(name, places, classifier, dataset, rule, choice, fit_s, args.out))
        started = time.perf_counter()
        joint = jointly_trained(finetuned.parent)
        classifier, train_s = load_classifier(joint), time.perf_counter() - started
        for rule, choice in CHOICES["layers"]:
            rows.append(report_row(name, "joint", classifier, open_dataset(classifier.config.data.path), rule, choice,
                                   train_s, args.out))
    print_table("early exits, test split (threshold chosen on validation)", rows, [
        ("dataset", "dataset", ""), ("exits", "exits", ""), ("choice", "choice", ""), ("threshold", "thr", ".3f"),
        ("leave", "leave %", ".1f"), ("full", "top1 full", ".2f"), ("early", "top1 exit", ".2f"),
        ("gf_full", "GFLOPs full", ".4f"), ("gf_early", "GFLOPs exit", ".4f"), ("cps_full", "clips/s full", ".0f"),
        ("cps_early", "clips/s exit", ".0f"), ("ms_full", "b1 ms full", ".2f"), ("ms_early", "b1 ms exit", ".2f"),
        ("p95_early", "b1 p95 exit", ".2f"), ("speedup", "b1 speed-up", ".2f"), ("ece_exit", "ECE 1st exit", ".3f"),
        ("ece_full", "ECE full", ".3f"), ("wall_s", "wall s", ".1f")])


def jointly_trained(run: Path) -> Path:
    """The same pretrained T1 finetuned again, with an exit after every layer trained beside the main
    head (finetune.exit_loss_weight 0.5)."""
    joint = run / "finetune_joint_exits"
    if not (joint / "checkpoints" / "best.safetensors").is_file():
        if joint.is_dir():  # a run stopped part-way resumes as its run directory records
            lifecycle.finetune(joint, resume=True)
        else:
            lifecycle.finetune(joint, pretrained=run / "pretrain",
                               overrides=["finetune.exit_loss_weight=0.5", "finetune.exits=layers"])
    return joint


def report_row(name: str, places: str, classifier, dataset, rule: str, choice: dict, fit_s: float, out: Path) -> dict:
    started = time.perf_counter()
    tag = f"{rule}-" + "-".join(f"{k}{v:g}" for k, v in choice.items())
    r = early_exit_report(classifier, dataset, rule=rule, out=out / f"{name}.{places}.{tag}.json", **choice)
    t = r["test"]
    return {"dataset": name, "exits": places, "choice": tag, "threshold": r["threshold"],
            "leave": 100 * (1 - t["exit_share"]["final"]), "full": 100 * t["top1_full"],
            "early": 100 * t["top1_early_exit"], "gf_full": t["gflops_per_clip_full"],
            "gf_early": t["gflops_per_clip_early_exit"], "cps_full": t["clips_per_second_full"],
            "cps_early": t["clips_per_second_early_exit"], "ms_full": t["batch1_latency_ms_full"]["mean"],
            "ms_early": t["batch1_latency_ms_early_exit"]["mean"], "p95_early": t["batch1_latency_ms_early_exit"]["p95"],
            "speedup": t["batch1_speedup"], "ece_exit": t["ece"][r["exits"][0]], "ece_full": t["ece"]["final"],
            "wall_s": fit_s + time.perf_counter() - started}

if __name__ == "__main__":
    main()
