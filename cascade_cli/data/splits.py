"""Which clips train, which select the model, which test it: one answer for every command.

The validation split is carved from the protocol's training split, stratified by class and seeded
by the run's seed. Training selects checkpoints on it and `cascade evaluate --split val` scores the
very same clips, because both ask `protocol_splits` with the run's config.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cascade_cli.config import Config
from cascade_cli.data.format import PreparedDataset, open_dataset
from cascade_cli.errors import UserError

SPLITS = ("test", "val", "train")  # test first: what evaluation is for


def stratified_split(labels: np.ndarray, indices: np.ndarray, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out round(fraction * n) clips of every class for validation.

    A class with at least two clips gives at least one when fraction > 0, so every class is
    validated, and always keeps at least one for training, so every class is learnable.
    """
    indices = np.sort(np.asarray(indices, dtype=np.int64))
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels[indices]):
        members = indices[labels[indices] == c]
        n_val = round(fraction * len(members))
        if fraction > 0 and len(members) >= 2:
            n_val = max(n_val, 1)
        n_val = min(n_val, len(members) - 1)
        val.append(rng.permutation(members)[:n_val])
    val = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    return np.setdiff1d(indices, val), val


@dataclass(frozen=True)
class Splits:
    dataset: PreparedDataset
    protocol: str
    train: np.ndarray  # the protocol's training clips less the validation ones
    val: np.ndarray
    test: np.ndarray
    unvalidated: tuple[int, ...] = ()  # classes too small to give a validation clip: all in training

    def unvalidated_names(self) -> list[str]:
        return [self.dataset.class_names[c] for c in self.unvalidated]

    def indices(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise UserError(f"split {split!r}: use {', '.join(SPLITS)}")
        return getattr(self, split)


def protocol_splits(dataset: PreparedDataset, protocol: str, val_fraction: float, seed: int) -> Splits:
    """Train / validation / test indices of one protocol; validation comes out of training."""
    protocol = dataset.resolve_protocol(protocol)
    train, val = stratified_split(dataset.labels, dataset.split_indices(protocol, "train"), val_fraction, seed)
    unvalidated = np.setdiff1d(dataset.labels[train], dataset.labels[val]) if val_fraction > 0 else []
    return Splits(dataset, protocol, train, val, dataset.split_indices(protocol, "test"),
                  tuple(int(c) for c in unvalidated))


def run_splits(cfg: Config, dataset: PreparedDataset | None = None) -> Splits:
    """The splits a run with config `cfg` trains, selects and is tested on (its own dataset unless
    another one with the same classes is given)."""
    if dataset is None:
        if not cfg.data.path:
            raise UserError("no dataset given: pass --data DIR (a prepared dataset, e.g. from "
                            "`cascade prepare synthetic`)")
        dataset = open_dataset(cfg.data.path)
    return protocol_splits(dataset, cfg.data.protocol, cfg.data.val_fraction, cfg.seed)
