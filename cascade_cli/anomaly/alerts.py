"""Tuning, evaluating and applying a detector's policy: `cascade anomaly tune / evaluate / score`.

Tuning reads only the detector's validation statistics. Evaluation scores the test split (or, to
inspect, the validation part) with the tuned policy and every baseline, and is the only place the
test split is used.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml
from scipy.special import softmax

from cascade_cli.anomaly.detector import POLICY, Detector
from cascade_cli.anomaly.policy import (DEFAULT_COSTS, Policy, baselines, decision_metrics, rule_statistics,
                                        search_direct, search_reward_model)
from cascade_cli.anomaly.statistics import STATISTICS, clip_statistics
from cascade_cli.atomic import atomic_path, write_text
from cascade_cli.data.format import open_dataset
from cascade_cli.errors import UserError
from cascade_cli.inference import score_indices, score_inputs
from cascade_cli.locking import directory_lock
from cascade_cli.metrics import auroc, roc_curve
from cascade_cli.progress import Reporter

SEARCHES = ("direct", "reward-model")


def tune(detector: Detector, *, rule: str = "or2", costs: dict[str, float] | None = None,
         search: str = "direct") -> dict:
    """Choose the rule's thresholds on the validation part; write policy.yaml with the baselines and
    every policy's validation metrics. Returns what was written."""
    costs = costs or dict(DEFAULT_COSTS)
    rule_statistics(rule)  # a bad rule fails before any work
    if search not in SEARCHES:
        raise UserError(f"--search {search!r}: use {' or '.join(SEARCHES)}")
    stats, abnormal, predicted = detector.validation()
    if search == "direct":
        thresholds = search_direct(rule, stats, abnormal, costs)
    else:
        behaviour = np.isin(predicted, detector.abnormal)  # the class rule: the agent's initial policy
        thresholds = search_reward_model(rule, stats, abnormal, costs, behaviour)
    policies = [Policy("tuned", thresholds), *baselines(rule, stats, detector.abnormal)]
    document = {
        "rule": rule, "search": search, "costs": costs, "tuned_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "policy_text": policies[0].text(), "policies": [p.to_dict() for p in policies],
        "validation": {p.name: decision_metrics(p.decide(stats, predicted), abnormal, costs) for p in policies},
    }
    with directory_lock(detector.path, "detector directory"):
        write_text(detector.path / POLICY, yaml.safe_dump(document, sort_keys=False))
    return document


def load_policy(detector: Detector) -> dict:
    path = detector.path / POLICY
    if not path.is_file():
        raise UserError(f"{detector.path}: no {POLICY}; choose thresholds first with `cascade anomaly tune "
                        f"{detector.path}`")
    document = yaml.safe_load(path.read_text())
    document["policies"] = [Policy.from_dict(p) for p in document["policies"]]
    return document


def evaluate(detector: Detector, *, split: str = "test", device: str | None = None,
             reporter: Reporter | None = None) -> dict:
    """Every policy's decisions and every statistic's AUROC on `split`; writes the JSON report, a ROC
    plot and histograms of the statistics into the detector directory."""
    if split not in ("test", "val"):
        raise UserError(f"--split {split!r}: use test (the evaluation) or val (the tuning data, to inspect)")
    document = load_policy(detector)
    if split == "val":
        stats, abnormal, predicted = detector.validation()
        clips = len(abnormal)
    else:
        classifier = detector.classifier(device)
        dataset = open_dataset(detector.manifest["dataset_path"])
        indices = dataset.split_indices(detector.manifest["protocol"], "test")
        scores = score_indices(classifier, dataset, indices, reporter=reporter or Reporter(quiet=True))
        stats, abnormal, predicted = detector.statistics(scores), detector.is_abnormal(scores.labels), scores.predictions
        clips = len(indices)
    costs = document["costs"]
    report = {
        "detector": str(detector.path), "split": split, "clips": clips, "abnormal": int(abnormal.sum()),
        "rule": document["rule"], "search": document["search"], "costs": costs,
        "policy_text": document["policy_text"],
        "policies": {p.name: decision_metrics(p.decide(stats, predicted), abnormal, costs)
                     for p in document["policies"]},
        "auroc": {name: auroc(stats[name], abnormal) for name in STATISTICS},
    }
    with directory_lock(detector.path, "detector directory"):
        write_text(detector.path / f"evaluation_{split}.json", json.dumps(report, indent=2) + "\n")
        _plot(detector.path, split, stats, abnormal, report["auroc"])
    return report


def _plot(folder: Path, split: str, stats: dict[str, np.ndarray], abnormal: np.ndarray, areas: dict) -> None:
    from matplotlib.figure import Figure  # a second of import time, paid only here

    fig = Figure(figsize=(6, 6), layout="constrained")
    ax = fig.add_subplot()
    for name in STATISTICS:
        fpr, tpr = roc_curve(stats[name], abnormal)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {areas[name]:.3f})" if areas[name] is not None else name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    ax.set(xlabel="false alarm rate (normal clips alerted)", ylabel="detection rate (abnormal clips alerted)",
           title=f"ROC on the {split} split")
    ax.legend(fontsize=8, loc="lower right")
    with atomic_path(folder / f"roc_{split}.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    fig = Figure(figsize=(12, 6), layout="constrained")
    for i, name in enumerate(STATISTICS):
        ax = fig.add_subplot(2, 4, i + 1)
        values = stats[name]
        bins = np.histogram_bin_edges(values, bins=40)
        ax.hist(values[~abnormal], bins=bins, alpha=0.6, density=True, label="normal")
        ax.hist(values[abnormal], bins=bins, alpha=0.6, density=True, label="abnormal")
        ax.set_title(name, fontsize=9)
    fig.axes[0].legend(fontsize=8)
    with atomic_path(folder / f"histograms_{split}.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)


# Statistics of the pooled features: a clip that leaves at an early exit never computes them.
FEATURE_STATISTICS = ("knn", "mahalanobis", "class_mahalanobis")


def check_early_exit(policy: Policy, detector: Detector) -> None:
    """Early exits skip the pooled features, so a policy that reads them cannot decide on early clips."""
    if needs := [stat for stat in policy.thresholds if stat in FEATURE_STATISTICS]:
        raise UserError(f"{detector.path}: its tuned policy reads {', '.join(needs)}, statistics of the pooled "
                        "features that clips leaving at an early exit never compute; score without --early-exit, "
                        "or tune a policy on statistics of the logits (e.g. `cascade anomaly tune --rule "
                        "single:energy`)")


def judge(detector: Detector, policy: Policy, logits: np.ndarray, embeddings: np.ndarray, top_k: int,
          exits: Sequence[str] | None = None) -> list[dict]:
    """Per clip of (N, K) logits and (N, d) pooled features: the policy's decision, the thresholds
    that fired, the statistics (null where a clip left early and never computed them; its logit
    statistics are then its exit's) and the top-k classes."""
    stats = clip_statistics(logits, embeddings, detector.bank)
    alerts = policy.decide(stats, logits.argmax(axis=1))
    names = detector.class_names
    probs = softmax(np.asarray(logits, np.float64), axis=1)
    results = []
    for i in range(len(logits)):
        clip_stats = {name: float(stats[name][i]) for name in STATISTICS}
        top = np.argsort(-probs[i], kind="stable")[:top_k]
        results.append({"decision": "ALERT" if alerts[i] else "LOG", "fired": policy.fired(clip_stats),
                        "statistics": {k: None if np.isnan(v) else v for k, v in clip_stats.items()},
                        "top": [{"label": int(c), "class": names[c], "prob": float(probs[i, c])} for c in top],
                        **({"exit": str(exits[i])} if exits is not None else {})})
    return results


def score(detector: Detector, inputs: Sequence[str | Path], *, top_k: int = 5, device: str | None = None,
          image_size: tuple[float, float] | None = None, without_confidence: bool = False, llm=None,
          exit_threshold: float | None = None, exit_rule: str = "max_softmax") -> list[dict]:
    """Per clip of raw input files: the tuned policy's decision, the statistics, the thresholds that
    fired and the top-k classes. `llm` (an anomaly.llm.LLMDecider) adds its rationale, or its decision.
    With `exit_threshold`, clips go through the early-exit cascade and each says where it left."""
    document = load_policy(detector)
    policy = document["policies"][0]
    if exit_threshold is not None:
        check_early_exit(policy, detector)
    classifier = detector.classifier(device)
    scores = score_inputs(classifier, inputs, image_size=image_size, without_confidence=without_confidence,
                          exit_threshold=exit_threshold, exit_rule=exit_rule)
    results = [{"input": source, **result} for source, result in
               zip(scores.names, judge(detector, policy, scores.logits, scores.embeddings, top_k, scores.exits))]
    if llm is not None:
        for result in results:
            best = result["top"][0]
            computed = {name: value for name, value in result["statistics"].items() if value is not None}
            reply = llm.decide(computed, best["class"], best["prob"], document["policy_text"], result["decision"])
            result.update(decision=reply.action, rationale=reply.rationale, llm_fell_back=reply.fell_back)
    return results
