"""The one table of bench/gpu_check.sh: its steps' figures beside the goals of the speed issue.

    python bench/gpu_report.py bench_out/gpu_check

Reads what the steps left in that folder (JSON from the benchmarks, the demo's run directory, each
step's exit status and wall time); a step that failed or ran out of time shows as such.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GOAL_SPEEDUP, GOAL_MFU = 10.0, 0.35  # NTU60-CS 1.0 in bf16 against the paper loop


def status(out: Path, step: str) -> tuple[int | None, int | None]:
    """(exit status, seconds) of a step; None where it never ran."""
    path = out / f"{step}.status"
    if not path.is_file():
        return None, None
    rc, seconds = path.read_text().split()
    return int(rc), int(seconds)


def rows_of(out: Path, name: str) -> list[dict]:
    path = out / f"{name}.json"
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def training(out: Path) -> list[list[str]]:
    lines = []
    for name in ("train_penn", "train_ntu", "train_ntu_compile"):
        for r in rows_of(out, name):
            if r["arm"] == "paper" and name == "train_ntu_compile":
                continue  # the same paper loop as train_ntu's
            goal = ""
            if r["config"] == "ntu_cs" and r["arm"] in ("ours", "compile"):
                met = r["speedup"] >= GOAL_SPEEDUP and (r.get("mfu") or 0) >= GOAL_MFU
                goal = f"{GOAL_SPEEDUP:g}x, {GOAL_MFU:.0%}: {'met' if met else 'not met'}"
            lines.append([f"train {r['config']} {r['arm']}", f"{r['batch']} {r['precision']}",
                          f"{r['samples_per_s']:.1f} samples/s", fmt(r.get("mfu"), ".1%"),
                          f"{r['speedup']:.2f}x paper", goal])
    return lines


def inference(out: Path) -> list[list[str]]:
    lines = []
    for r in rows_of(out, "inference"):
        if r["runtime"] != "PyTorch eager" or "forward" not in r["what"]:
            continue
        figure = f"{r['ms_median']:.2f} ms" if r["batch"] == 1 else f"{r['clips_per_s']:.0f} clips/s"
        lines.append([f"infer {r['what'].replace(' forward', '')} {r['device']}", f"{r['batch']} {r['precision']}",
                      figure, "", "", ""])
    return lines


def demo(out: Path) -> list[list[str]]:
    run = out / "demo" / "ft"
    metrics = run / "metrics.jsonl"
    epochs = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    report = run / "eval_test.json"
    top1 = json.loads(report.read_text())["top1"] if report.is_file() else None
    rate = sum(e["samples_per_s"] for e in epochs) / len(epochs) if epochs else None
    log = run / "run.log"
    precision = next((line.split("precision: ", 1)[1].split(" on ")[0] for line in
                      (log.read_text().splitlines() if log.is_file() else []) if "precision: " in line), "-")
    return [["torchrun demo finetune", f"1 process {precision}", f"{fmt(rate, '.0f')} samples/s",
             "", f"test top-1 {fmt(None if top1 is None else 100 * top1, '.1f')} %", ""]]


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench_out/gpu_check")
    env = (out / "environment.txt").read_text().strip() if (out / "environment.txt").is_file() else "?"
    table = [["what", "batch, precision", "figure", "MFU", "against", "goal"]]
    table += training(out) + inference(out) + demo(out)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    print("GPU check\n" + "\n".join("  " + line for line in env.splitlines()))
    for n, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    steps = sorted(p.stem for p in out.glob("*.status"))
    print("\nsteps: " + ", ".join(f"{s} {'ok' if rc == 0 else f'FAILED (exit {rc})'} {sec}s"
                                  for s in steps for rc, sec in [status(out, s)]))


if __name__ == "__main__":
    main()
