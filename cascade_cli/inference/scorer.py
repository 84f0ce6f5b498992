"""The batched scorer: logits, pooled embeddings and labels of many clips, with temporal views.

Every inference command scores through here, for a prepared split or for raw input files. Scores
are a pure function of (checkpoint, clips, views): evaluation draws no random numbers and the
model masks padded frames, so neither batch size nor clip order changes them (to float rounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cascade_cli.data.format import PreparedDataset, open_dataset
from cascade_cli.data.pipeline import ClipDataset, collate_clips
from cascade_cli.data.splits import class_subset, protocol_splits
from cascade_cli.errors import UserError
from cascade_cli.inference.cascade import cascade_forward, check_rule, exit_places, require_exit_head
from cascade_cli.inference.classifier import Classifier
from cascade_cli.inference.inputs import model_input, read_inputs
from cascade_cli.progress import Reporter
from cascade_cli.runtime import to_device


@dataclass
class Scores:
    """Per clip, in the order asked for. Logits and embeddings are each the mean over the clip's
    views; logits rather than probabilities are averaged, so saved scores are logits for any K."""

    logits: np.ndarray  # (N, classes) float32
    embeddings: np.ndarray  # (N, d) float32: the pooled features, the head's input
    labels: np.ndarray  # (N,) int64; -1 where unknown (raw inputs)
    names: list[str]  # clip names of a dataset, or input files (with #i inside batch files)
    views: int = 1
    exits: np.ndarray | None = None  # (N,) str with an exit threshold: the exit each clip left at, or "final"

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(axis=1)


@torch.no_grad()
def _score(classifier: Classifier, items: Dataset, clips: int, views: int, batch_size: int, workers: int,
           reporter: Reporter, exit_threshold: float | None = None, exit_rule: str = "max_softmax"
           ) -> tuple[np.ndarray, ...]:
    """`items` holds each clip as consecutive items (its `views`, and their mirrors with
    data.eval_flip) -> per-clip (logits, embeddings, labels, exits), the views' means. With an exit threshold, the cascade (inference.cascade) scores: clips that leave early
    have NaN embeddings, and exits names where each left; None without one."""
    backend, device = classifier.backend, classifier.device
    loader = DataLoader(items, batch_size=batch_size, collate_fn=collate_clips, num_workers=workers)
    logits, embeddings, labels, left_at = [], [], [], []
    with reporter.track(f"scoring {clips} clips x {views} view(s)", len(items)) as advance:
        for batch in loader:
            x, _, pad, _ = to_device(batch, device)
            if exit_threshold is None:
                z, pooled = backend.forward(x, pad)  # (B, K), (B, d)
            else:
                z, pooled, where = cascade_forward(backend, x, pad, exit_threshold, exit_rule)
                left_at.append(where.cpu())
            logits.append(z.float().cpu())
            embeddings.append(pooled.float().cpu())
            labels.append(batch.labels)
            advance(len(batch.labels))

    per = len(items) // clips  # the temporal views, and their mirrors with data.eval_flip

    def per_clip(chunks: list[torch.Tensor]) -> np.ndarray:
        return torch.cat(chunks).reshape(clips, per, -1).mean(1).numpy()

    return (per_clip(logits), per_clip(embeddings), torch.cat(labels)[::per].numpy().astype(np.int64),
            np.array(exit_places(backend))[torch.cat(left_at).numpy()] if left_at else None)


def _check_views(classifier: Classifier, views: int) -> None:
    if views < 1:
        raise UserError(f"--clips {views}: use 1 or more views per clip")
    if views > 1 and classifier.config.data.frames == 0:
        raise UserError(f"--clips {views}: the run feeds each clip at its own length (data.frames=0), "
                        "so there is only one temporal view; use --clips 1")


def refuse_flip_views(classifier: Classifier) -> None:
    """Early exits decide clip by clip on one view; a run evaluated with test-time flips averages two."""
    if classifier.config.data.eval_flip:
        raise UserError(f"{classifier.path}: the run evaluates with data.eval_flip (each clip and its mirror, "
                        "averaged), but early exits decide on one view per clip; use a run without it")


def device_batches(classifier: Classifier, dataset: PreparedDataset, indices: Sequence[int],
                   batch_size: int) -> list:
    """The clips `indices`, transformed as at test time, as collated batches on the classifier's
    device, all prepared up front: for callers that run the model on them more than once or time
    the model alone (early exits)."""
    refuse_flip_views(classifier)
    items = ClipDataset(dataset, np.asarray(indices, dtype=np.int64), classifier.config.data, train=False, seed=0)
    return [to_device(collate_clips([items[i] for i in range(start, min(start + batch_size, len(items)))]),
                      classifier.device) for start in range(0, len(items), batch_size)]


def score_indices(classifier: Classifier, dataset: PreparedDataset, indices: Sequence[int], *, views: int = 1,
                  batch_size: int | None = None, reporter: Reporter | None = None) -> Scores:
    """Scores of the clips `indices` of a prepared dataset, in that order."""
    _check_views(classifier, views)
    classifier.check_dataset(dataset)
    indices = np.asarray(indices, dtype=np.int64)
    cfg = classifier.config
    items = ClipDataset(dataset, indices, cfg.data, train=False, seed=0, views=views)
    logits, embeddings, labels, _ = _score(classifier, items, len(indices), views,
                                           batch_size or cfg.eval_batch_size, cfg.workers,
                                           reporter or Reporter(quiet=True))
    return Scores(logits, embeddings, labels, [str(n) for n in dataset.names[indices]], views)


def score_split(classifier: Classifier, split: str = "test", *, data: str | Path | PreparedDataset | None = None,
                views: int = 1, batch_size: int | None = None, reporter: Reporter | None = None) -> Scores:
    """Scores of one split (test, val or train) of the checkpoint's protocol, on its own dataset or
    on `data` (a prepared dataset with the same classes). val and train are the very clips training
    selected and trained on; a model trained on a class subset is scored on the clips of its own
    classes only, because the others were never its task."""
    cfg = classifier.config
    dataset = data if isinstance(data, PreparedDataset) else open_dataset(data or cfg.data.path)
    classifier.check_dataset(dataset)
    splits = protocol_splits(dataset, classifier.meta["protocol"], cfg.data.val_fraction, cfg.seed,
                             class_subset(cfg.data, dataset.class_names))
    indices = splits.indices(split)
    if len(indices) == 0:
        raise UserError(f"{dataset.path}: split '{split}' of protocol '{splits.protocol}' is empty")
    return score_indices(classifier, dataset, indices, views=views, batch_size=batch_size, reporter=reporter)


class _InputItems(Dataset):
    def __init__(self, tensors: list[torch.Tensor]):
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        return self.tensors[k], -1


def score_inputs(classifier: Classifier, inputs: Sequence[str | Path], *, raw: bool = False,
                 image_size: tuple[float, float] | None = None, views: int = 1, batch_size: int | None = None,
                 reporter: Reporter | None = None, without_confidence: bool = False,
                 exit_threshold: float | None = None, exit_rule: str = "max_softmax") -> Scores:
    """Scores of every clip of every raw input file (see inference.inputs), through the checkpoint's
    own preprocessing, or fed as given with raw=True. With `exit_threshold`, through the early-exit
    cascade under `exit_rule` (the checkpoint needs an exit head)."""
    _check_views(classifier, views)
    if raw and views > 1:
        raise UserError("--raw inputs are fed as given: there is only one temporal view")
    if exit_threshold is not None:
        require_exit_head(classifier)
        check_rule(exit_rule, exit_threshold)
        refuse_flip_views(classifier)
        if views > 1:
            raise UserError("--early-exit decides per clip: use it with --clips 1")
    clips = [clip for path in inputs for clip in read_inputs(Path(path), classifier.layout.coords)]
    flips = (False, True) if classifier.config.data.eval_flip and not raw else (False,)
    tensors = [model_input(clip, classifier, raw=raw, image_size=image_size, view=v, views=views,
                           without_confidence=without_confidence, flipped=flipped)
               for clip in clips for flipped in flips for v in range(views)]
    cfg = classifier.config
    logits, embeddings, labels, exits = _score(classifier, _InputItems(tensors), len(clips), views,
                                                batch_size or cfg.eval_batch_size, 0,
                                                reporter or Reporter(quiet=True), exit_threshold, exit_rule)
    return Scores(logits, embeddings, labels, [clip.source for clip in clips], views, exits)

