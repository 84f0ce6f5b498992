"""Per-clip anomaly statistics from a frozen classifier's logits and pooled embeddings.

Every statistic is oriented so that a higher value means "more unusual":

    entropy            -sum p ln p of the class probabilities (p clipped to [1e-8, 1])   the agent's
    lowconf            1 - the top-1 probability                                         the agent's
    knn                mean Euclidean distance to the k nearest embeddings of the normal bank
    mahalanobis        distance to the bank's mean under the bank's covariance           the agent's
    energy             -logsumexp(logits) (Liu et al. 2020)
    neg_max_logit      -max logit (Hendrycks et al. 2022)
    class_mahalanobis  the smallest distance to a normal class's mean under one shared covariance
                       (Lee et al. 2018)

Embeddings are the classifier's pooled features (the head's input), L2-normalised as the agent does,
so bank distances lie in [0, 2]. The bank's mean, covariances and their pseudo-inverses are fitted
once (the agent refitted them at every call).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STATISTICS = ("entropy", "lowconf", "knn", "mahalanobis", "energy", "neg_max_logit", "class_mahalanobis")
RIDGE = 1e-5  # added to the covariance's diagonal before the pseudo-inverse, as the agent does


def normalise(embeddings: np.ndarray) -> np.ndarray:
    """(N, d) -> unit rows (float32)."""
    x = np.asarray(embeddings, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _precision(centred: np.ndarray, ddof: int) -> np.ndarray:
    """Pseudo-inverse of (covariance + RIDGE * I), in float64: (d, d)."""
    covariance = centred.T @ centred / max(len(centred) - ddof, 1)
    return np.linalg.pinv(covariance + RIDGE * np.eye(len(covariance)))


@dataclass
class NormalBank:
    """The embeddings of normal training clips and what is fitted on them."""

    embeddings: np.ndarray  # (N, d) float32, unit rows
    labels: np.ndarray  # (N,) int64 class of each bank clip
    mean: np.ndarray  # (d,) float64
    precision: np.ndarray  # (d, d) float64: pinv(sample covariance + RIDGE I), the agent's Mahalanobis
    class_means: np.ndarray  # (C, d) float64, one row per normal class in the bank
    class_precision: np.ndarray  # (d, d) float64: pinv(shared within-class covariance + RIDGE I)
    k: int = 5

    def __post_init__(self):
        # What class_mahalanobis needs of the bank alone, once: P m per class and m^T P m.
        self.class_pm = self.class_means @ self.class_precision  # (C, d)
        self.class_mpm = (self.class_pm * self.class_means).sum(axis=1)  # (C,)

    @classmethod
    def fit(cls, embeddings: np.ndarray, labels: np.ndarray, k: int = 5) -> NormalBank:
        z = normalise(embeddings).astype(np.float64)
        mean = z.mean(axis=0)
        classes = np.unique(labels)
        class_means = np.stack([z[labels == c].mean(axis=0) for c in classes])
        within = z - class_means[np.searchsorted(classes, labels)]
        return cls(z.astype(np.float32), np.asarray(labels, np.int64), mean, _precision(z - mean, ddof=1),
                   class_means, _precision(within, ddof=0), k)

    def arrays(self) -> dict[str, np.ndarray]:
        """For safetensors (safetensors.numpy)."""
        return {name: np.ascontiguousarray(getattr(self, name)) for name in
                ("embeddings", "labels", "mean", "precision", "class_means", "class_precision")}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], k: int) -> NormalBank:
        return cls(**arrays, k=k)


def knn_distance(z: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """(N, d) unit queries -> (N,) mean Euclidean distance to the k nearest bank rows (unit too, so
    the squared distance is 2 - 2 z.b: one matrix product for the whole bank)."""
    squared = np.maximum(2.0 - 2.0 * (np.asarray(z, np.float32) @ bank.T), 0.0)  # (N, B)
    nearest = np.partition(squared, k - 1, axis=1)[:, :k]
    return np.sqrt(nearest.astype(np.float64)).mean(axis=1)


def mahalanobis(z: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """(N, d) -> (N,) sqrt((z - mean)^T P (z - mean))."""
    centred = np.asarray(z, np.float64) - mean
    return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", centred, precision, centred), 0.0))


def class_mahalanobis(z: np.ndarray, bank: NormalBank) -> np.ndarray:
    """(N, d) -> (N,) the distance to the nearest normal class's mean under the shared precision:
    (z - m)^T P (z - m) = z^T P z - 2 z^T P m + m^T P m, for every class mean m at once (P symmetric)."""
    z = np.asarray(z, np.float64)
    squared = ((z @ bank.class_precision) * z).sum(axis=1)[:, None] - 2 * z @ bank.class_pm.T + bank.class_mpm
    return np.sqrt(np.maximum(squared.min(axis=1), 0.0))


def clip_statistics(logits: np.ndarray, embeddings: np.ndarray, bank: NormalBank) -> dict[str, np.ndarray]:
    """Every statistic of STATISTICS for (N, classes) logits and (N, d) pooled embeddings."""
    from scipy.special import logsumexp, softmax  # here: the command line imports this module for its names

    logits = np.asarray(logits, np.float64)
    probs = softmax(logits, axis=1)
    clipped = np.clip(probs, 1e-8, 1.0)
    z = normalise(embeddings)
    return {
        "entropy": -(clipped * np.log(clipped)).sum(axis=1),
        "lowconf": 1.0 - probs.max(axis=1),
        "knn": knn_distance(z, bank.embeddings, bank.k),
        "mahalanobis": mahalanobis(z, bank.mean, bank.precision),
        "energy": -logsumexp(logits, axis=1),
        "neg_max_logit": -logits.max(axis=1),
        "class_mahalanobis": class_mahalanobis(z, bank),
    }
