"""A fitted anomaly detector: the classifier it belongs to, its normal bank, its validation statistics.

    DETECTOR/detector.yaml          manifest: checkpoint and its sha256, dataset, protocol, abnormal
                                    classes, the clips of each part, the transform, the bank's size
    DETECTOR/bank.safetensors       the normal bank and what is fitted on it (statistics.NormalBank)
    DETECTOR/validation.safetensors per validation clip: every statistic, label, prediction, abnormal flag
    DETECTOR/clips.safetensors      the dataset indices of the bank's clips and of the validation clips
    DETECTOR/policy.yaml            the tuned policy and its baselines (`cascade anomaly tune`)
    DETECTOR/evaluation_<split>.json, roc_<split>.png, histograms_<split>.png (`cascade anomaly evaluate`)

The three parts never overlap. The bank holds the normal-class clips the classifier trained on. The
validation part, which alone tunes thresholds, is the classifier's own validation split (seeded,
stratified, never trained on) plus the same share of the training clips of classes the classifier
never saw. The test split is scored by `evaluate` only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml
from safetensors.numpy import load_file, save_file

from cascade_cli.anomaly.sets import check_split, named_set, parse_classes
from cascade_cli.anomaly.statistics import NormalBank, clip_statistics
from cascade_cli.atomic import atomic_directory, atomic_path, write_text
from cascade_cli.config import to_dict
from cascade_cli.data.format import PreparedDataset, open_dataset
from cascade_cli.data.splits import run_splits, stratified_split
from cascade_cli.errors import UserError, require_directory
from cascade_cli.inference import Classifier, Scores, load_classifier, score_indices
from cascade_cli.progress import Reporter

MANIFEST, BANK, VALIDATION, POLICY = "detector.yaml", "bank.safetensors", "validation.safetensors", "policy.yaml"
CLIPS = "clips.safetensors"  # the dataset indices of the bank's and the validation part's clips


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Detector:
    path: Path
    manifest: dict
    bank: NormalBank

    @property
    def abnormal(self) -> tuple[int, ...]:
        return tuple(self.manifest["abnormal"])

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    def classifier(self, device: str | None = None) -> Classifier:
        """The detector's classifier, refused when the checkpoint file is no longer the one it was fitted on."""
        checkpoint = Path(self.manifest["checkpoint"])
        if not checkpoint.is_file():
            raise UserError(f"{self.path}: its checkpoint {checkpoint} is gone")
        if sha256_file(checkpoint) != self.manifest["checkpoint_sha256"]:
            raise UserError(f"{self.path}: {checkpoint} is not the checkpoint this detector was fitted on (sha256 "
                            "differs); fit a new detector for it")
        return load_classifier(checkpoint, device)

    def statistics(self, scores: Scores) -> dict[str, np.ndarray]:
        return clip_statistics(scores.logits, scores.embeddings, self.bank)

    def is_abnormal(self, labels: np.ndarray) -> np.ndarray:
        return np.isin(labels, self.abnormal)

    def validation(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """(statistics, abnormal flags, predicted classes) of the validation clips."""
        tensors = load_file(str(self.path / VALIDATION))
        stats = {k.removeprefix("stat."): v for k, v in tensors.items() if k.startswith("stat.")}
        return stats, tensors["abnormal"].astype(bool), tensors["predicted"]


def open_detector(path: str | Path) -> Detector:
    path = Path(path)
    require_directory(path, "detector directory")
    if not (path / MANIFEST).is_file():
        raise UserError(f"{path}: not a detector (no {MANIFEST}); make one with `cascade anomaly fit`")
    manifest = yaml.safe_load((path / MANIFEST).read_text())
    return Detector(path, manifest, NormalBank.from_arrays(load_file(str(path / BANK)), k=int(manifest["k"])))


def _abnormal_classes(classifier: Classifier, dataset: PreparedDataset, abnormal: str | None,
                      abnormal_set: str | None, unknown: list[int]) -> list[int]:
    chosen = set(unknown)
    if abnormal:
        chosen |= set(parse_classes(abnormal, dataset.class_names))
    if abnormal_set:
        chosen |= set(named_set(abnormal_set, dataset.class_names))
    check_split(sorted(chosen), dataset.num_classes)
    return sorted(chosen)


def fit_detector(checkpoint: str | Path, out: str | Path, *, data: str | Path | None = None,
                 abnormal: str | None = None, abnormal_set: str | None = None, k: int = 5,
                 device: str | None = None, overwrite: bool = False, reporter: Reporter | None = None) -> Detector:
    """Score the training split with the frozen classifier, build the normal bank from the normal
    classes it trained on, and keep the statistics of the validation part for tuning.

    Abnormal classes: those named (`abnormal`, comma-separated names or indices), an NTU-AD set
    (`abnormal_set`), and every class the classifier was not trained on (the open-set protocol)."""
    reporter = reporter or Reporter(quiet=True)
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; choose another --out or pass --overwrite")
    if k < 1:
        raise UserError(f"--k {k}: use 1 or more neighbours")
    classifier = load_classifier(checkpoint, device)
    cfg = classifier.config
    dataset = open_dataset(data or cfg.data.path)
    classifier.check_dataset(dataset)
    splits = run_splits(cfg, dataset)
    unknown = sorted(set(range(dataset.num_classes)) - set(splits.classes))
    abnormal_classes = _abnormal_classes(classifier, dataset, abnormal, abnormal_set, unknown)
    labels = dataset.labels
    bank_clips = splits.train[~np.isin(labels[splits.train], abnormal_classes)]
    if len(bank_clips) < k:
        raise UserError(f"the normal bank would hold {len(bank_clips)} clip(s), fewer than k={k}: too few normal "
                        "training clips (fewer abnormal classes, or a smaller --k)")
    train_all = dataset.split_indices(splits.protocol, "train")
    unseen = train_all[np.isin(labels[train_all], unknown)]
    val_clips = np.union1d(splits.val, stratified_split(labels, unseen, cfg.data.val_fraction, cfg.seed)[1])
    val_abnormal = np.isin(labels[val_clips], abnormal_classes)
    if not val_abnormal.any() or val_abnormal.all():
        raise UserError(f"the validation part ({len(val_clips)} clips) holds no "
                        f"{'abnormal' if not val_abnormal.any() else 'normal'} clip to tune thresholds on; the "
                        "classifier was trained with data.val_fraction="
                        f"{cfg.data.val_fraction}: train it with a validation split that has both")

    reporter.info(f"normal bank: {len(bank_clips)} training clips of {dataset.num_classes - len(abnormal_classes)} "
                  f"normal classes; validation: {len(val_clips)} clips ({int(val_abnormal.sum())} abnormal)")
    bank_scores = score_indices(classifier, dataset, bank_clips, reporter=reporter)
    bank = NormalBank.fit(bank_scores.embeddings, labels[bank_clips], k)
    val_scores = score_indices(classifier, dataset, val_clips, reporter=reporter)
    stats = clip_statistics(val_scores.logits, val_scores.embeddings, bank)

    manifest = {
        "format": "cascade-detector/1",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": str(classifier.path.resolve()), "checkpoint_sha256": sha256_file(classifier.path),
        "dataset": dataset.name, "dataset_path": str(dataset.path.resolve()), "protocol": splits.protocol,
        "class_names": list(dataset.class_names), "abnormal": abnormal_classes,
        "abnormal_names": [dataset.class_names[c] for c in abnormal_classes], "abnormal_set": abnormal_set,
        "unknown_classes": unknown, "k": k, "bank_size": int(len(bank_clips)),
        "validation": {"clips": int(len(val_clips)), "abnormal": int(val_abnormal.sum())},
        "seed": cfg.seed, "val_fraction": cfg.data.val_fraction,
        "transform": {"views": 1, "data": to_dict(cfg.data)},
    }
    validation = {f"stat.{name}": np.ascontiguousarray(v) for name, v in stats.items()}
    validation.update(labels=val_scores.labels, predicted=val_scores.predictions.astype(np.int64),
                      abnormal=val_abnormal.astype(np.int8))
    clips = {"bank": bank_clips.astype(np.int64), "validation": val_clips.astype(np.int64)}
    _write(out, manifest, {BANK: bank.arrays(), VALIDATION: validation, CLIPS: clips}, overwrite)
    return open_detector(out)


def _write(out: Path, manifest: dict, files: dict[str, dict[str, np.ndarray]], overwrite: bool) -> None:
    """Everything into a temporary folder of this process, then renamed: a detector directory is
    complete or absent."""
    with atomic_directory(out, overwrite) as tmp:
        for name, arrays in files.items():
            with atomic_path(tmp / name) as path:  # the umask's permissions, not safetensors' 0600
                save_file(arrays, str(path))
        write_text(tmp / MANIFEST, yaml.safe_dump(manifest, sort_keys=False))
