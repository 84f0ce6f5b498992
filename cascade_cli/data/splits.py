"""Which clips train, which select the model, which test it: one answer for every command.

The validation split is carved from the protocol's training split, stratified by class and seeded
by the run's seed. Training selects checkpoints on it and `cascade evaluate --split val` scores the
very same clips, because both ask `protocol_splits` with the run's config.

A run may know only some of the dataset's classes (`data.classes`, `data.exclude_classes`), so that
the others can later stand for actions it has never seen. Every split then holds only the included
classes, and the validation split is carved from the subset's training clips, so that model
selection, like training, never meets a held-out class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from cascade_cli.config import Config, DataConfig
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
    classes: tuple[int, ...]  # the classes the splits hold (all of the dataset's unless a subset was asked for)
    unvalidated: tuple[int, ...] = ()  # classes too small to give a validation clip: all in training

    def unvalidated_names(self) -> list[str]:
        return [self.dataset.class_names[c] for c in self.unvalidated]

    def class_names(self) -> list[str]:
        return [self.dataset.class_names[c] for c in self.classes]

    def indices(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise UserError(f"split {split!r}: use {', '.join(SPLITS)}")
        return getattr(self, split)


def _class_index(key: str, entry: str, class_names: Sequence[str]) -> int:
    """A name first, then a 0-based index, so a dataset whose class names are numbers still works by name."""
    if entry in class_names:
        return list(class_names).index(entry)
    if entry.isdecimal() and int(entry) < len(class_names):
        return int(entry)
    raise UserError(f"config key '{key}': {entry!r} is neither a class name nor an index 0-{len(class_names) - 1}; "
                    f"classes: {', '.join(class_names)}")


def class_subset(data: DataConfig, class_names: Sequence[str]) -> tuple[int, ...]:
    """The class indices a run with these data settings trains and is scored on: `data.classes`
    (all when empty) less `data.exclude_classes`. A classifier needs two classes to tell apart."""
    keys = [f"data.{key}" for key in ("classes", "exclude_classes") if getattr(data, key)]
    if not keys:
        return tuple(range(len(class_names)))
    wanted = [_class_index("data.classes", entry, class_names) for entry in data.classes]
    unwanted = {_class_index("data.exclude_classes", entry, class_names) for entry in data.exclude_classes}
    included = tuple(c for c in range(len(class_names)) if (not wanted or c in wanted) and c not in unwanted)
    if len(included) < 2:
        named = " and ".join(f"'{key}'" for key in keys)
        left = ", ".join(class_names[c] for c in included) or "none"
        raise UserError(f"config key{'s' if len(keys) > 1 else ''} {named}: the subset leaves {len(included)} "
                        f"class(es) ({left}); a classifier needs at least 2 of {', '.join(class_names)}")
    return included


def protocol_splits(dataset: PreparedDataset, protocol: str, val_fraction: float, seed: int,
                    classes: Sequence[int] | None = None) -> Splits:
    """Train / validation / test indices of one protocol, of the clips of `classes` only (None: all);
    validation comes out of training."""
    protocol = dataset.resolve_protocol(protocol)
    classes = tuple(range(dataset.num_classes)) if classes is None else tuple(int(c) for c in classes)

    def of_classes(part: str) -> np.ndarray:
        indices = dataset.split_indices(protocol, part)
        return indices[np.isin(dataset.labels[indices], classes)]

    train, val = stratified_split(dataset.labels, of_classes("train"), val_fraction, seed)
    unvalidated = np.setdiff1d(dataset.labels[train], dataset.labels[val]) if val_fraction > 0 else []
    return Splits(dataset, protocol, train, val, of_classes("test"), classes, tuple(int(c) for c in unvalidated))


def run_splits(cfg: Config, dataset: PreparedDataset | None = None) -> Splits:
    """The splits a run with config `cfg` trains, selects and is tested on (its own dataset unless
    another one with the same classes is given), restricted to the run's class subset."""
    if dataset is None:
        if not cfg.data.path:
            raise UserError("no dataset given: pass --data DIR (a prepared dataset, e.g. from "
                            "`cascade prepare synthetic`)")
        dataset = open_dataset(cfg.data.path)
    return protocol_splits(dataset, cfg.data.protocol, cfg.data.val_fraction, cfg.seed,
                           class_subset(cfg.data, dataset.class_names))
