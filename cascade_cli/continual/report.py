"""A continual run's results as files, and several runs side by side (`cascade continual report`)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from cascade_cli.atomic import atomic_path, write_text
from cascade_cli.errors import UserError

RESULT = "continual.json"
# The paper's Table 1 FAA (%) for the benchmarks it reports (reference continual_learning.md §4).
PAPER_FAA = {("ntu60", "xview"): {"ft": {0: 16.05}, "joint": {0: 84.75}, "er": {500: 51.00, 2000: 68.27},
                                  "der": {500: 51.36, 2000: 66.74}, "derpp": {500: 60.41, 2000: 73.09},
                                  "charon": {500: 73.60, 2000: 77.77}},
             ("ntu60", "xsub"): {"ft": {0: 15.64}, "joint": {0: 77.32}, "er": {500: 45.80, 2000: 62.74},
                                 "der": {500: 49.97, 2000: 63.48}, "derpp": {500: 57.22, 2000: 67.64},
                                 "charon": {500: 68.30, 2000: 72.70}}}


def write_result(run_dir: Path, result: dict) -> None:
    """continual.json, the accuracy matrix as CSV, and its heatmap."""
    write_text(run_dir / RESULT, json.dumps(result, indent=2) + "\n")
    matrix = np.asarray(result["accuracy"])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["after task", *(f"task {j + 1}" for j in range(matrix.shape[1]))])
    writer.writerows([i + 1, *(f"{v:.4f}" for v in row)] for i, row in enumerate(matrix))
    write_text(run_dir / "accuracy.csv", buffer.getvalue())
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.2 * matrix.shape[1] + 2, 1.0 * len(matrix) + 1.5), layout="constrained")
    ax = fig.add_subplot()
    shown = np.where(np.tril(np.ones_like(matrix)) > 0, matrix, np.nan) if len(matrix) > 1 else matrix
    image = ax.imshow(100 * shown, cmap="viridis", vmin=0, vmax=100)
    for (i, j), value in np.ndenumerate(shown):
        if not np.isnan(value):
            ax.text(j, i, f"{100 * value:.0f}", ha="center", va="center", color="white" if value < 0.6 else "black")
    ax.set(xlabel="test clips of task", ylabel="after training task",
           title=f"{result['method']}: FAA {100 * result['faa']:.1f} %")
    ax.set_xticks(range(matrix.shape[1]), [str(j + 1) for j in range(matrix.shape[1])])
    ax.set_yticks(range(len(matrix)), [str(i + 1) for i in range(len(matrix))] if len(matrix) > 1 else ["all"])
    fig.colorbar(image, ax=ax, label="top-1 (%)")
    with atomic_path(run_dir / "accuracy.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def report(run_dirs: list[Path]) -> list[dict]:
    """One row per run: method, buffer, FAA, forgetting, BWT, bytes, and the paper's FAA where it
    reports the same benchmark ("not comparable" elsewhere)."""
    rows = []
    for run in run_dirs:
        path = Path(run) / RESULT
        if not path.is_file():
            raise UserError(f"{run}: no {RESULT}; is it a finished `cascade continual` run?")
        result = json.loads(path.read_text())
        buffer = result["buffer"] if result["method"] in ("er", "der", "derpp", "charon") else 0
        paper = PAPER_FAA.get((result["dataset"], result["protocol"]), {}).get(result["method"], {}).get(buffer)
        comparable = paper is not None and result["tasks_count"] == 6
        rows.append({"run": str(run), "method": result["method"], "buffer": buffer, "faa": result["faa"],
                     "forgetting": result["forgetting"], "bwt": result["bwt"], "buffer_bytes": result["buffer_bytes"],
                     "paper_faa": paper if comparable else None, "comparable": comparable})
    return rows
