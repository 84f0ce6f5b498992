"""Threshold policies: which statistics, which thresholds, tuned for a cost matrix on validation only.

A rule ALERTs when any of its statistics reaches its threshold (OR), else LOGs:

    or4           entropy, lowconf, knn, mahalanobis   the agent's README policy
    or2           knn, mahalanobis                     the agent's latest code
    single:STAT   one statistic of statistics.STATISTICS

Candidate thresholds are quantiles of the validation statistics at the levels of the authors' grids
(reference anomaly_agent.md §6). `direct` search computes the exact mean reward of every candidate
on the labelled validation clips; `reward-model` reproduces the authors' search, which fits a random
forest to (statistics, action) -> reward and ranks candidates by its predictions. Costs are given as
rewards per outcome (tp=5, fp=-3, fn=-10, tn=0 by default); the cost of a policy is minus its mean
reward per clip, so lower is better.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from cascade_cli.anomaly.statistics import STATISTICS
from cascade_cli.errors import UserError

RULES = {"or4": ("entropy", "lowconf", "knn", "mahalanobis"), "or2": ("knn", "mahalanobis")}
GRID_2 = (0.76, 0.78, 0.82, 0.84, 0.86, 0.87, 0.88, 0.885, 0.89, 0.895)
GRID_4 = (0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95, 0.99)
GRID_SINGLE = tuple(sorted({*GRID_2, *GRID_4}))
DEFAULT_COSTS = {"tp": 5.0, "fp": -3.0, "fn": -10.0, "tn": 0.0}
RANDOM_SEED = 67  # the authors' seed of the random baseline


def rule_statistics(rule: str) -> tuple[str, ...]:
    if rule in RULES:
        return RULES[rule]
    if rule.startswith("single:") and rule.removeprefix("single:") in STATISTICS:
        return (rule.removeprefix("single:"),)
    raise UserError(f"--rule {rule!r}: use or4, or2 or single:STAT with STAT one of {', '.join(STATISTICS)}")


def rule_grid(rule: str) -> tuple[float, ...]:
    return {"or4": GRID_4, "or2": GRID_2}.get(rule, GRID_SINGLE)


def parse_costs(text: str) -> dict[str, float]:
    """'tp=5,fp=-3,fn=-10,tn=0' -> rewards per outcome; every outcome once, numbers only."""
    costs: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        key = key.strip().lower()
        if key not in DEFAULT_COSTS or key in costs:
            raise UserError(f"--costs {text!r}: {key!r} is not one of tp, fp, fn, tn (each once), e.g. "
                            "tp=5,fp=-3,fn=-10,tn=0")
        try:
            costs[key] = float(value)
        except ValueError:
            raise UserError(f"--costs {text!r}: {key}={value!r} is not a number") from None
    if missing := [k for k in DEFAULT_COSTS if k not in costs]:
        raise UserError(f"--costs {text!r}: missing {', '.join(missing)}; give all four, e.g. tp=5,fp=-3,fn=-10,tn=0")
    return costs


@dataclass
class Policy:
    """ALERT when any statistic reaches its threshold; the empty policy never alerts."""

    name: str
    thresholds: dict[str, float]  # statistic -> threshold
    always: str | None = None  # "ALERT" or "LOG" for the constant baselines
    class_rule: tuple[int, ...] | None = None  # ALERT when the predicted class is one of these

    def decide(self, stats: dict[str, np.ndarray], predicted: np.ndarray) -> np.ndarray:
        """(N,) bool, True = ALERT."""
        n = len(predicted)
        if self.always is not None:
            return np.full(n, self.always == "ALERT")
        if self.class_rule is not None:
            return np.isin(predicted, self.class_rule)
        alert = np.zeros(n, dtype=bool)
        for stat, threshold in self.thresholds.items():
            alert |= stats[stat] >= threshold
        return alert

    def fired(self, stats: dict[str, float]) -> list[str]:
        """The thresholds one clip's statistics reach."""
        return [stat for stat, threshold in self.thresholds.items() if stats[stat] >= threshold]

    def text(self, class_names: list[str] | None = None) -> str:
        """The policy in words, generated from the rule applied (the agent's saved text said BOTH
        where its rule was OR)."""
        if self.always is not None:
            return f"Always {self.always}."
        if self.class_rule is not None:
            names = [class_names[c] for c in self.class_rule] if class_names else list(map(str, self.class_rule))
            return f"ALERT if the predicted action is one of: {', '.join(names)}; otherwise LOG."
        conditions = " OR ".join(f"{stat} >= {threshold:.6g}" for stat, threshold in self.thresholds.items())
        return f"ALERT if {conditions}; otherwise LOG."

    def to_dict(self) -> dict:
        data: dict = {"name": self.name, "thresholds": {k: float(v) for k, v in self.thresholds.items()}}
        if self.always is not None:
            data["always"] = self.always
        if self.class_rule is not None:
            data["class_rule"] = [int(c) for c in self.class_rule]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Policy:
        rule = data.get("class_rule")
        return cls(data["name"], {k: float(v) for k, v in data.get("thresholds", {}).items()}, data.get("always"),
                   None if rule is None else tuple(rule))


def outcomes(alert: np.ndarray, abnormal: np.ndarray) -> dict[str, int]:
    return {"tp": int((alert & abnormal).sum()), "fp": int((alert & ~abnormal).sum()),
            "fn": int((~alert & abnormal).sum()), "tn": int((~alert & ~abnormal).sum())}


def decision_metrics(alert: np.ndarray, abnormal: np.ndarray, costs: dict[str, float]) -> dict:
    """Accuracy, precision, recall, F1 (positive = abnormal / ALERT; 0 where undefined), the confusion
    counts and the mean cost per clip (minus the mean reward)."""
    counts = outcomes(alert, abnormal)
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    reward = sum(costs[k] * v for k, v in counts.items())
    return {"accuracy": (tp + counts["tn"]) / len(alert), "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "confusion": counts, "mean_cost": -reward / len(alert), "alerts": int(alert.sum()), "clips": len(alert)}


def candidates(rule: str, stats: dict[str, np.ndarray]) -> list[dict[str, float]]:
    """Every combination of grid quantiles of the rule's statistics, in grid order."""
    names, grid = rule_statistics(rule), rule_grid(rule)
    levels = {name: np.quantile(stats[name], grid) for name in names}
    return [dict(zip(names, values)) for values in itertools.product(*(levels[n] for n in names))]


def search_direct(rule: str, stats: dict[str, np.ndarray], abnormal: np.ndarray,
                  costs: dict[str, float]) -> dict[str, float]:
    """The candidate with the lowest exact mean cost on the labelled clips (the first such in grid order)."""
    predicted = np.zeros(len(abnormal), dtype=np.int64)
    best, best_cost = None, np.inf
    for thresholds in candidates(rule, stats):
        cost = decision_metrics(Policy("c", thresholds).decide(stats, predicted), abnormal, costs)["mean_cost"]
        if cost < best_cost:
            best, best_cost = thresholds, cost
    return best


def search_reward_model(rule: str, stats: dict[str, np.ndarray], abnormal: np.ndarray, costs: dict[str, float],
                        behaviour: np.ndarray) -> dict[str, float]:
    """The authors' search: a random forest learns reward from (statistics, action) on the clips as
    a behaviour policy decided them, and candidates are ranked by its predicted mean reward."""
    try:
        from sklearn.ensemble import RandomForestRegressor
    except ImportError:
        raise UserError("--search reward-model needs scikit-learn: pip install 'cascade-cli[reward-model]'") from None
    names = rule_statistics(rule)
    states = np.stack([stats[n] for n in names], axis=1)
    reward = np.select([behaviour & abnormal, behaviour & ~abnormal, ~behaviour & abnormal],
                       [costs["tp"], costs["fp"], costs["fn"]], costs["tn"])
    model = RandomForestRegressor(max_depth=4, n_estimators=200, random_state=0)
    model.fit(np.column_stack([states, behaviour.astype(float)]), reward)
    predicted = np.zeros(len(abnormal), dtype=np.int64)
    best, best_reward = None, -np.inf
    for thresholds in candidates(rule, stats):
        action = Policy("c", thresholds).decide(stats, predicted)
        mean = float(model.predict(np.column_stack([states, action.astype(float)])).mean())
        if mean > best_reward:
            best, best_reward = thresholds, mean
    return best


def baselines(rule: str, stats: dict[str, np.ndarray], abnormal_classes: tuple[int, ...]) -> list[Policy]:
    """The comparisons every tuned policy is reported against, all fixed from validation data."""
    names, grid = rule_statistics(rule), rule_grid(rule)
    rng = np.random.default_rng(RANDOM_SEED)
    return [
        Policy("fixed-0.90", {n: float(np.quantile(stats[n], 0.90)) for n in names}),
        Policy("random", {n: float(np.quantile(stats[n], rng.choice(grid))) for n in names}),
        Policy("always-log", {}, always="LOG"),
        Policy("always-alert", {}, always="ALERT"),
        Policy("class-rule", {}, class_rule=tuple(abnormal_classes)),
    ]
