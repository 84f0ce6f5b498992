"""Multi-stream ensembles: several runs' class probabilities on the same clips, fused by a weighted
sum whose weights are chosen on the validation split (never on test), as the field fuses its joint,
bone and motion streams.

The runs must be interchangeable but for their inputs: the same dataset, protocol and class order,
and the same validation clips (the same data.seed and data.val_fraction), or weights tuned on one
run's validation clips could favour a run that trained on them.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.special import softmax

from cascade_cli.atomic import write_text
from cascade_cli.data.format import open_dataset
from cascade_cli.errors import UserError
from cascade_cli.evaluate import default_report_path
from cascade_cli.inference import Scores, load_classifier, score_split
from cascade_cli.metrics import confusion_matrix, macro_accuracy, topk_accuracy
from cascade_cli.progress import Reporter

WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)  # each run's weight before normalising; the field's fusions fall in it


def fuse(probs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """(N, K) probabilities of each run -> their weighted sum (N, K)."""
    return sum(w * p for w, p in zip(weights, probs))


def fusion_weights(probs: Sequence[np.ndarray], labels: np.ndarray) -> tuple[tuple[float, ...], float]:
    """The weights (summing to 1) of WEIGHT_GRID with the best top-1 on the clips given (validation
    only), ties going to the weights nearest equal ones; and that top-1."""
    n, best = len(probs), None
    for raw in itertools.product(WEIGHT_GRID, repeat=n):
        if not any(raw):
            continue
        weights = tuple(float(w) / sum(raw) for w in raw)
        top1 = float((fuse(probs, weights).argmax(axis=1) == labels).mean())
        key = (top1, -float(np.sum((np.array(weights) - 1.0 / n) ** 2)))
        if best is None or key > best[0]:
            best = (key, weights)
    return best[1], best[0][0]


def _check_runs(checkpoints: Sequence[str | Path], metas: list[dict], val: list[Scores], test: list[Scores]) -> None:
    first = checkpoints[0]
    for path, meta, v, t in zip(checkpoints[1:], metas[1:], val[1:], test[1:]):
        for key, what in (("dataset", "dataset"), ("protocol", "protocol"), ("class_names", "class order")):
            if meta.get(key) != metas[0].get(key):
                raise UserError(f"--ensemble: {path} has another {what} than {first} "
                                f"({meta.get(key)!r} vs {metas[0].get(key)!r}); fuse runs of one dataset and protocol")
        if v.names != val[0].names:
            raise UserError(f"--ensemble: {path} validates on other clips than {first} (data.seed or "
                            "data.val_fraction differ); fusion weights need the same validation clips")
        if t.names != test[0].names:
            raise UserError(f"--ensemble: {path} is tested on other clips than {first}")


def ensemble_report(checkpoints: Sequence[str | Path], *, device: str | None = None, batch_size: int | None = None,
                    out: str | Path | None = None, reporter: Reporter | None = None, precision: str = "fp32") -> dict:
    """Fuse the runs' test probabilities with weights chosen on their shared validation split; write
    the report (default: eval_test_ensemble.json beside the first checkpoint). Returns it."""
    classifiers = [load_classifier(c, device, precision) for c in checkpoints]
    val, test = [], []
    for classifier in classifiers:
        dataset = open_dataset(classifier.config.data.path)
        val.append(score_split(classifier, "val", data=dataset, batch_size=batch_size, reporter=reporter))
        test.append(score_split(classifier, "test", data=dataset, batch_size=batch_size, reporter=reporter))
    _check_runs(checkpoints, [c.meta for c in classifiers], val, test)
    if not len(val[0].labels):
        raise UserError(f"--ensemble: {checkpoints[0]} has no validation clips to choose fusion weights on")
    weights, val_top1 = fusion_weights([softmax(s.logits, axis=1) for s in val], val[0].labels)
    fused = fuse([softmax(s.logits, axis=1) for s in test], weights)
    labels, num_classes = test[0].labels, len(classifiers[0].class_names)
    confusion = confusion_matrix(labels, fused.argmax(axis=1), num_classes)
    first = classifiers[0]
    report = {
        "ensemble": [{"checkpoint": str(c.path), "representation": c.config.data.representation, "weight": w,
                      "val_top1": float((v.predictions == v.labels).mean()),
                      "test_top1": float((t.predictions == t.labels).mean())}
                     for c, w, v, t in zip(classifiers, weights, val, test)],
        "weights_chosen_on": "val", "val_top1": val_top1, "precision": precision,
        "dataset": first.meta.get("dataset"), "protocol": first.meta["protocol"], "split": "test",
        "clips": len(labels), "top1": float(np.trace(confusion)) / len(labels),
        "top5": topk_accuracy(fused, labels, 5), "macro": macro_accuracy(confusion),
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out = Path(out) if out else default_report_path(first.path, "test").with_name("eval_test_ensemble.json")
    write_text(out, json.dumps(report, indent=2) + "\n")
    return report
