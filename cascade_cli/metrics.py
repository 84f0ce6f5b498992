"""Pure metrics over arrays of logits and labels: no model, no files, no randomness.

Evaluation reports, ablation tables and every later command compute their numbers here, so that
one question ("the spread over seeds", "the class-mean accuracy") has one answer everywhere.

Mean ± std convention: the **sample** standard deviation (ddof = 1) over runs, as papers quote
"81.1 ± 0.3" for a handful of seeds; a single run has no spread and reports 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0.0 for a single value) of `values`."""
    if len(values) == 0:
        raise ValueError("mean_std of no values")
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Stable ordering breaks ties towards the lower class index, as argmax does, so top-1 agrees
    with the predictions."""
    top = np.argsort(-logits, axis=1, kind="stable")[:, :min(k, logits.shape[1])]
    return float((top == labels[:, None]).any(axis=1).mean())


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(classes, classes) int64 counts; rows are true classes, columns predicted ones."""
    return np.bincount(labels * num_classes + predictions, minlength=num_classes ** 2).reshape(num_classes, -1)


def class_accuracies(confusion: np.ndarray) -> np.ndarray:
    """Diagonal / row sum; NaN for a class without clips in the split, so that it counts in no
    mean instead of as 0 or 1."""
    support = confusion.sum(axis=1)
    return np.divide(np.diag(confusion), support, out=np.full(len(confusion), np.nan), where=support > 0)


def macro_accuracy(confusion: np.ndarray) -> float:
    return float(np.nanmean(class_accuracies(confusion)))


def per_class_table(confusion: np.ndarray, class_names: Sequence[str]) -> list[dict]:
    """One row per class, with the class it is most often mistaken for: where to look first when a
    class lags."""
    accuracy = class_accuracies(confusion)
    mistakes = confusion - np.diag(np.diag(confusion))
    rows = []
    for c, name in enumerate(class_names):
        other = int(mistakes[c].argmax())
        rows.append({"class": name, "support": int(confusion[c].sum()), "correct": int(confusion[c, c]),
                     "accuracy": None if np.isnan(accuracy[c]) else float(accuracy[c]),
                     "confused_with": class_names[other] if mistakes[c, other] else None,
                     "confused_count": int(mistakes[c, other])})
    return rows


def person_breakdown(confusion: np.ndarray, two_person: Sequence[int]) -> dict:
    """Paper Table 2's numbers for the two-person classes, the other (single-person) ones and all.

    `macro` is the official script's mean of per-class accuracies; `weighted` the accuracy over the
    group's clips, which is what "accuracy on two-person samples" usually means. Both are given
    because they differ whenever classes have unequal support.
    """
    accuracy, support, correct = class_accuracies(confusion), confusion.sum(axis=1), np.diag(confusion)
    pair = np.zeros(len(confusion), dtype=bool)
    pair[list(two_person)] = True

    def group(members: np.ndarray) -> dict:
        samples, seen = int(support[members].sum()), members & (support > 0)
        return {"classes": int(members.sum()), "samples": samples,
                "macro": float(accuracy[seen].mean()) if seen.any() else None,
                "weighted": int(correct[members].sum()) / samples if samples else None}

    return {"two_person": group(pair), "single_person": group(~pair), "overall": group(np.ones_like(pair))}


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of `scores` (higher = positive) for boolean labels: the probability
    that a random positive outscores a random negative, ties counting half (Mann-Whitney U from
    average ranks). None when one class is absent."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return None
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) as the threshold falls through every distinct score,
    from (0, 0) to (1, 1)."""
    positive = np.asarray(positive, dtype=bool)
    order = np.argsort(-np.asarray(scores), kind="stable")
    ranked, hits = np.asarray(scores)[order], positive[order]
    last_of_each_value = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    tp, fp = np.cumsum(hits)[last_of_each_value], np.cumsum(~hits)[last_of_each_value]
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def continual_metrics(accuracy: np.ndarray) -> dict[str, float | None]:
    """The class-incremental summaries of an accuracy matrix a[i][j] (top-1 on task j's test clips
    after training task i; entries with j > i are ignored):

    FAA: final average accuracy, the mean of the last row. Forgetting: for each task but the last,
    its best accuracy before the end minus its final one, averaged. BWT (backward transfer): for
    each task but the last, its final accuracy minus its accuracy right after it was learnt,
    averaged. Average incremental accuracy: the mean over rows of each row's mean over seen tasks.
    """
    a = np.asarray(accuracy, dtype=np.float64)
    T = len(a)
    final = a[T - 1]
    earlier = range(T - 1)
    return {
        "faa": float(final.mean()),
        "forgetting": float(np.mean([a[:T - 1, j][j:].max() - final[j] for j in earlier])) if T > 1 else None,
        "bwt": float(np.mean([final[j] - a[j, j] for j in earlier])) if T > 1 else None,
        "average_incremental_accuracy": float(np.mean([a[i, :i + 1].mean() for i in range(T)])),
    }


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: the clip-weighted mean, over equal-width bins of top-1 confidence, of |accuracy -
    confidence| (Guo et al. 2017, 15 bins)."""
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = (predicted == labels).astype(np.float64)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return float(total / len(labels))
