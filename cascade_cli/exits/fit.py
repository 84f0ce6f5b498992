"""Post-hoc exit heads (DeeBERT-style): the classifier stays frozen and in eval mode; the exit head
after T1 learns from T1's pooled tokens of the training clips the classifier trained on.

T1's pooled tokens are computed once, so fitting takes seconds: the head (LayerNorm + Linear) then
trains on those vectors alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cascade_cli.checkpoint import save_checkpoint
from cascade_cli.data.format import open_dataset
from cascade_cli.errors import UserError
from cascade_cli.data.splits import run_splits
from cascade_cli.inference import Classifier, load_classifier
from cascade_cli.inference.scorer import device_batches
from cascade_cli.model.cascadeformer import masked_mean
from cascade_cli.model.exits import EXIT_AFTER_T1, add_exits
from cascade_cli.progress import Reporter


@torch.no_grad()
def t1_features(classifier: Classifier, dataset, indices: np.ndarray, batch_size: int = 64) -> torch.Tensor:
    """(N, d) masked means of T1's tokens for the clips `indices`, the test-time transform applied."""
    model, chunks = classifier.model.eval(), []
    for x, _, pad, _ in device_batches(classifier, dataset, indices, batch_size):
        chunks.append(masked_mean(model.t1(x, pad), pad).float().cpu())
    return torch.cat(chunks)


def fit_exit_heads(checkpoint: str | Path, out: str | Path, *, data: str | Path | None = None, epochs: int = 100,
                   lr: float = 1e-2, seed: int = 0, reporter: Reporter | None = None,
                   device: str | None = None) -> Path:
    """Fit the exit head after T1 on the classifier's training clips and write the classifier with
    it to `out` (a checkpoint file). Returns `out`."""
    reporter = reporter or Reporter(quiet=True)
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out}: a folder; give the checkpoint file to write, e.g. {out / 'exits.safetensors'}")
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out}: the checkpoint file to write must end in .safetensors")
    classifier = load_classifier(checkpoint, device)
    dataset = open_dataset(data or classifier.config.data.path)
    classifier.check_dataset(dataset)
    splits = run_splits(classifier.config, dataset)
    features = t1_features(classifier, dataset, splits.train)
    labels = torch.from_numpy(dataset.labels[splits.train].astype(np.int64))
    torch.manual_seed(seed)
    model = add_exits(classifier.model)
    head = model.exits[EXIT_AFTER_T1].to("cpu").train()
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(epochs):
        loss = F.cross_entropy(head.fc(head.norm(features)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    reporter.info(f"exit head after T1: training loss {loss.item():.4f} after {epochs} full-batch epochs")
    model.to(classifier.device).eval()
    save_checkpoint(out, model, classifier.config, {**classifier.meta, "exits": [EXIT_AFTER_T1]})
    return out
