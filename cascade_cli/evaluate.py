"""Scoring a finetuned checkpoint on a split it never saw during training or model selection.

Besides top-1/top-5 a report gives what papers break results down by: class-mean (macro) accuracy,
a per-class table with a confusion matrix, NTU's single- vs two-person split (reference
cascadeformer.md §B.9), K-view test-time averaging, per-clip logits for ensembling, and mean ± std
over runs. Scores are a pure function of (checkpoint, data, views): evaluation draws no random
numbers and the model masks padded frames, so neither batch size nor clip order changes them.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from cascade_cli.atomic import atomic_path, write_text
from cascade_cli.data.format import open_dataset
from cascade_cli.data.registry import two_person_classes
from cascade_cli.errors import UserError
from cascade_cli.inference import load_classifier, score_split
from cascade_cli.metrics import (confusion_matrix, macro_accuracy, mean_std, per_class_table, person_breakdown,
                                 topk_accuracy)
from cascade_cli.progress import Reporter

HEADLINE = ("top1", "top5", "macro")


def default_report_path(checkpoint: Path, split: str) -> Path:
    """`RUN/eval_test.json` for a run's checkpoint, else next to the checkpoint file."""
    parent = checkpoint.parent
    run_dir = parent.parent if parent.name == "checkpoints" else parent
    return run_dir / f"eval_{split}.json"


# ----------------------------------------------------------------------------------------------
# Several runs


def aggregate_reports(reports: list[dict]) -> dict:
    """Mean and sample standard deviation (the convention of cascade_cli.metrics: ddof=1, 0 for one
    run) of the headline numbers over runs that differ only in seed, as papers quote "81.1 ± 0.3".

    Runs must have been scored on the same dataset, protocol, split and number of views: a spread
    over different questions would mean nothing.
    """
    if not reports:
        raise UserError("no evaluation reports to aggregate")
    same = ("dataset", "protocol", "split", "views")
    for key in same:
        if len(values := {str(r.get(key)) for r in reports}) > 1:
            raise UserError(f"cannot aggregate runs evaluated with different {key}: {', '.join(sorted(values))}")

    def spread(values: list) -> dict:
        if None in values:
            return {"mean": None, "std": None}
        mean, std = mean_std(values)
        return {"mean": mean, "std": std}

    summary = {"runs": len(reports), "checkpoints": [r["checkpoint"] for r in reports],
               **{key: reports[0].get(key) for key in same},
               **{key: spread([r[key] for r in reports]) for key in HEADLINE}}
    if all("person_breakdown" in r for r in reports):
        summary["person_breakdown"] = {
            group: {stat: spread([r["person_breakdown"][group][stat] for r in reports])
                    for stat in ("macro", "weighted")}
            for group in reports[0]["person_breakdown"]}
    return summary


# ----------------------------------------------------------------------------------------------
# Files beside the report


def write_confusion_csv(path: Path, confusion: np.ndarray, class_names: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true \\ predicted", *class_names])
    writer.writerows([name, *row] for name, row in zip(class_names, confusion.tolist()))
    write_text(path, buffer.getvalue())


def plot_confusion(path: Path, confusion: np.ndarray, class_names: Sequence[str], title: str) -> None:
    """Colours are row-normalised so that rare and frequent classes read alike; the figure grows
    with the class count and the labels shrink, so 60 or 120 names stay legible. Counts are
    printed in the cells only while they fit (up to 20 classes)."""
    from matplotlib.figure import Figure  # a second of import time, paid only for a breakdown

    n = len(class_names)
    share = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size, font = max(6.0, 0.2 * n + 3), float(np.clip(480 / n, 4, 9))
    fig = Figure(figsize=(size + 1.5, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class's clips")
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=font)
    ax.set_yticks(range(n), class_names, fontsize=font)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if n <= 20:
        for (i, j), count in np.ndenumerate(confusion):
            if count:
                ax.text(j, i, count, ha="center", va="center", fontsize=font,
                        color="white" if share[i, j] > 0.5 else "black")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_scores(path: Path, names: np.ndarray, labels: np.ndarray, logits: np.ndarray,
                 class_names: Sequence[str]) -> None:
    """Plain arrays only (unicode names, no objects), so np.load(..., allow_pickle=False) reads them."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, logits=logits.astype(np.float32), labels=labels, predictions=logits.argmax(axis=1),
                 names=np.asarray(names, dtype=str), class_names=np.asarray(class_names, dtype=str))


# ----------------------------------------------------------------------------------------------
# The command


def evaluate(checkpoint: str | Path, *, data_path: str | None = None, split: str = "test",
             device: str | None = None, batch_size: int | None = None, out: str | Path | None = None,
             reporter: Reporter | None = None, breakdown: bool = False, clips: int = 1,
             save_scores: bool = False, precision: str = "fp32") -> dict:
    """Score a finetuning checkpoint on a split and write the JSON report (and its side files).

    breakdown: per-class table, confusion matrix as CSV and PNG, and for NTU the single- vs
    two-person numbers. clips: K deterministic temporal views per clip whose logits are averaged.
    save_scores: per-clip logits, labels and predictions as .npz for ensembling. Side files are
    named after the report: `eval_test.json` gets `eval_test_confusion.csv/.png`, `eval_test_scores.npz`.
    precision: fp32 unless asked (bf16, fp16: autocast); the report records it.
    """
    classifier = load_classifier(checkpoint, device, precision)
    ds, ckpt_path = open_dataset(data_path or classifier.config.data.path), classifier.path
    scores = score_split(classifier, split, data=ds, views=clips, batch_size=batch_size, reporter=reporter)
    logits, labels = scores.logits, scores.labels
    confusion = confusion_matrix(labels, scores.predictions, ds.num_classes)
    report = {
        "checkpoint": str(ckpt_path), "dataset": ds.name, "dataset_path": str(ds.path),
        "protocol": classifier.meta["protocol"], "split": split, "clips": len(labels), "views": clips,
        "precision": precision,
        "top1": float(np.trace(confusion)) / len(labels), "top5": topk_accuracy(logits, labels, 5),
        "macro": macro_accuracy(confusion),
        "model": {"variant": classifier.config.model.variant, "epoch": classifier.meta.get("epoch"),
                  "selected_by": classifier.meta.get("selected_by")},
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out_path = Path(out) if out else default_report_path(ckpt_path, split)
    side = out_path.with_name(out_path.stem)
    if breakdown:
        report["per_class"] = per_class_table(confusion, ds.class_names)
        if (two_person := two_person_classes(ds.name, ds.num_classes)) is not None:
            report["person_breakdown"] = person_breakdown(confusion, two_person)
        csv_path, png_path = Path(f"{side}_confusion.csv"), Path(f"{side}_confusion.png")
        write_confusion_csv(csv_path, confusion, ds.class_names)
        plot_confusion(png_path, confusion, ds.class_names,
                       f"{ds.name} / {report['protocol']} / {split}: top-1 {100 * report['top1']:.2f} %, "
                       f"class mean {100 * report['macro']:.2f} %")
        report.update(confusion_csv=str(csv_path), confusion_png=str(png_path))
    if save_scores:
        scores_path = Path(f"{side}_scores.npz")
        write_scores(scores_path, np.asarray(scores.names), labels, logits, ds.class_names)
        report["scores_path"] = str(scores_path)
    write_text(out_path, json.dumps(report, indent=2) + "\n")
    report["report_path"] = str(out_path)
    return report
