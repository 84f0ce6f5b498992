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
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cascade_cli.atomic import atomic_path, write_text
from cascade_cli.checkpoint import load_checkpoint, resolve_checkpoint
from cascade_cli.config import Config, DataConfig
from cascade_cli.data.format import PreparedDataset, open_dataset
from cascade_cli.data.pipeline import ClipDataset, collate_clips, model_input_shape, resize, stratified_split
from cascade_cli.data.representation import represent
from cascade_cli.errors import UserError
from cascade_cli.model import build_classifier
from cascade_cli.progress import Reporter
from cascade_cli.train import resolve_device, to_device

# 0-based two-person (mutual) classes: A50-A60, and for NTU120 also A106-A120.
NTU_TWO_PERSON = {60: tuple(range(49, 60)), 120: (*range(49, 60), *range(105, 120))}
HEADLINE = ("top1", "top5", "macro")


def default_report_path(checkpoint: Path, split: str) -> Path:
    """`RUN/eval_test.json` for a run's checkpoint, else next to the checkpoint file."""
    parent = checkpoint.parent
    run_dir = parent.parent if parent.name == "checkpoints" else parent
    return run_dir / f"eval_{split}.json"


def two_person_classes(dataset_name: str, num_classes: int) -> list[int] | None:
    """The two-person classes of NTU RGB+D 60/120, or None for any other dataset.

    Name and class count must both match: a custom dataset that happens to have 60 classes has no
    such split, and the labels of an NTU subset no longer mean A1..A120.
    """
    if not dataset_name.lower().startswith("ntu") or num_classes not in NTU_TWO_PERSON:
        return None
    return list(NTU_TWO_PERSON[num_classes])


# ----------------------------------------------------------------------------------------------
# Deterministic temporal views


def temporal_view(x: np.ndarray, cfg: DataConfig, view: int, views: int) -> np.ndarray:
    """[L, ...] -> [cfg.frames, ...]: view number `view` of `views` deterministic temporal views.

    resize: a crop of the evaluation crop's length, linearly resized; indices: the evenly spaced
    index grid shifted by a fraction of its step. View k sits at the centre of the k-th of `views`
    equal parts of the room the view can move in, so a single view is exactly the pipeline's
    evaluation sampling and more views spread symmetrically around it. With the default
    eval_crop=0.95 resize views can move by only 5 % of the clip; lower it for views that differ.
    """
    L, shift = len(x), (view + 0.5) / views
    if cfg.sampling == "indices":
        step = (L - 1) / max(cfg.frames - 1, 1)
        grid = np.linspace(0, L - 1, cfg.frames) + (shift - 0.5) * step
        return x[np.clip(grid, 0, L - 1).astype(np.int64)]
    room = 2 * int((1 - cfg.eval_crop) * L / 2)
    start = round(shift * room)
    return resize(x[start:start + L - room], cfg.frames)


class TemporalViews(Dataset):
    """Each clip of `indices` as `views` consecutive items, one per temporal view.

    A clip runs through the pipeline's deterministic evaluation transform with temporal sampling and
    representation switched off, then gets its view and its representation here, in the pipeline's
    order. The training path with its random draws is left untouched.
    """

    def __init__(self, dataset: PreparedDataset, indices: np.ndarray, cfg: DataConfig, views: int):
        self.clips = ClipDataset(dataset, indices, replace(cfg, frames=0, representation="joints"),
                                 train=False, seed=0)
        self.dataset, self.cfg, self.views = dataset, cfg, views

    def __len__(self) -> int:
        return len(self.clips.indices) * self.views

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        position, view = divmod(k, self.views)
        clip_index = int(self.clips.indices[position])
        layout = self.dataset.layout
        x = self.clips.transform(clip_index, None)  # (L, P*J, C) joint positions, every frame
        x = x.reshape(len(x), -1, layout.num_joints, layout.coords)
        if self.cfg.frames > 0:
            x = temporal_view(x, self.cfg, view, self.views)
        x = represent(x, self.cfg.representation, self.clips.bones, self.cfg.bone_param_clamp)
        x = x.reshape(len(x), -1, x.shape[-1])
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), int(self.dataset.labels[clip_index])


@torch.no_grad()
def score_clips(model: torch.nn.Module, dataset: PreparedDataset, indices: np.ndarray, cfg: Config,
                device: torch.device, batch_size: int, views: int, reporter: Reporter) -> np.ndarray:
    """(clips, classes) float32 logits in `indices` order, each the mean of its views' logits.

    Logits rather than softmax are averaged so that the saved scores are logits for every K and
    ensembling code treats single- and multi-view runs alike.
    """
    items = TemporalViews(dataset, indices, cfg.data, views)
    loader = DataLoader(items, batch_size=batch_size, collate_fn=collate_clips, num_workers=cfg.workers)
    chunks = []
    with reporter.track(f"scoring {len(indices)} clips x {views} view(s)", len(items)) as advance:
        for batch in loader:
            x, _, pad, _ = to_device(batch, device)
            chunks.append(model(x, pad).float().cpu())
            advance(len(batch.labels))
    return torch.cat(chunks).reshape(len(indices), views, -1).mean(1).numpy()


# ----------------------------------------------------------------------------------------------
# Metrics


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


def aggregate_reports(reports: list[dict]) -> dict:
    """Mean and sample standard deviation (ddof=1; 0 for one run) of the headline numbers over runs
    that differ only in seed, as papers quote "81.1 ± 0.3".

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
        return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}

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
             save_scores: bool = False) -> dict:
    """Score a finetuning checkpoint on a split and write the JSON report (and its side files).

    breakdown: per-class table, confusion matrix as CSV and PNG, and for NTU the single- vs
    two-person numbers. clips: K deterministic temporal views per clip whose logits are averaged.
    save_scores: per-clip logits, labels and predictions as .npz for ensembling. Side files are
    named after the report: `eval_test.json` gets `eval_test_confusion.csv/.png`, `eval_test_scores.npz`.
    """
    reporter = reporter or Reporter(quiet=True)
    ckpt_path = resolve_checkpoint(checkpoint, "best")
    ckpt = load_checkpoint(ckpt_path)
    if ckpt.meta.get("kind") != "finetune":
        raise UserError(f"{ckpt_path}: a {ckpt.meta.get('kind')} checkpoint has no classifier; evaluate a finetuning run")
    cfg = ckpt.config
    if clips < 1:
        raise UserError(f"--clips {clips}: use 1 or more views per clip")
    if clips > 1 and cfg.data.frames == 0:
        raise UserError(f"--clips {clips}: the run feeds each clip at its own length (data.frames=0), "
                        "so there is only one temporal view; use --clips 1")
    ds = open_dataset(data_path or cfg.data.path)
    if list(ds.class_names) != list(ckpt.meta["class_names"]):
        raise UserError(f"{ds.path}: its class names differ from the ones {ckpt_path} was trained on")
    shape = model_input_shape(ds, cfg.data)
    if shape != (ckpt.meta["num_joints"], ckpt.meta["in_channels"]):
        raise UserError(f"{ds.path}: gives model inputs of {shape[0]}x{shape[1]}, the checkpoint expects "
                        f"{ckpt.meta['num_joints']}x{ckpt.meta['in_channels']}")
    protocol = ckpt.meta["protocol"]
    if split == "test":
        indices = ds.split_indices(protocol, "test")
    elif split in ("train", "val"):
        train, val = stratified_split(ds.labels, ds.split_indices(protocol, "train"), cfg.data.val_fraction, cfg.seed)
        indices = train if split == "train" else val
    else:
        raise UserError(f"--split {split!r}: use test, val or train")
    if len(indices) == 0:
        raise UserError(f"{ds.path}: split '{split}' of protocol '{protocol}' is empty")

    dev = resolve_device(device or cfg.device)
    model = build_classifier(cfg.model, *shape, ds.num_classes)
    model.load_state_dict(ckpt.state_dict)
    model.to(dev).eval()
    logits = score_clips(model, ds, indices, cfg, dev, batch_size or cfg.eval_batch_size, clips, reporter)
    labels = ds.labels[indices].astype(np.int64)
    confusion = confusion_matrix(labels, logits.argmax(axis=1), ds.num_classes)
    report = {
        "checkpoint": str(ckpt_path), "dataset": ds.name, "dataset_path": str(ds.path), "protocol": protocol,
        "split": split, "clips": len(indices), "views": clips,
        "top1": float(np.trace(confusion)) / len(indices), "top5": topk_accuracy(logits, labels, 5),
        "macro": macro_accuracy(confusion),
        "model": {"variant": cfg.model.variant, "epoch": ckpt.meta.get("epoch"),
                  "selected_by": ckpt.meta.get("selected_by")},
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
                       f"{ds.name} / {protocol} / {split}: top-1 {100 * report['top1']:.2f} %, "
                       f"class mean {100 * report['macro']:.2f} %")
        report.update(confusion_csv=str(csv_path), confusion_png=str(png_path))
    if save_scores:
        scores_path = Path(f"{side}_scores.npz")
        write_scores(scores_path, ds.names[indices], labels, logits, ds.class_names)
        report["scores_path"] = str(scores_path)
    write_text(out_path, json.dumps(report, indent=2) + "\n")
    report["report_path"] = str(out_path)
    return report
