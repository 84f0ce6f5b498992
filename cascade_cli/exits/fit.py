"""Post-hoc exit heads (DeeBERT-style): the classifier stays frozen and in eval mode; each exit head
learns from the pooled tokens at its place, over the training clips the classifier trained on.

The pooled tokens are computed once, so fitting takes seconds: each head (LayerNorm + Linear) then
trains on those vectors alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cascade_cli.checkpoint import save_checkpoint
from cascade_cli.data.format import open_dataset
from cascade_cli.data.splits import run_splits
from cascade_cli.errors import UserError
from cascade_cli.inference import Classifier, load_classifier
from cascade_cli.inference.scorer import device_batches
from cascade_cli.model.exits import ExitHeads, PooledTokens, add_exits, exit_names
from cascade_cli.progress import Reporter


@torch.no_grad()
def pooled_tokens(classifier: Classifier, dataset, indices: np.ndarray, names: tuple[str, ...],
                  batch_size: int = 64) -> dict[str, torch.Tensor]:
    """{exit name: (N, d) masked means of the tokens at that exit's place} for the clips `indices`,
    the test-time transform applied."""
    model, chunks = classifier.model.eval(), {name: [] for name in names}
    readers = ExitHeads({name: PooledTokens() for name in names})
    for x, _, pad, _ in device_batches(classifier, dataset, indices, batch_size):
        for name, pooled in readers.run(model, x, pad).exits.items():
            chunks[name].append(pooled.cpu())
    return {name: torch.cat(parts) for name, parts in chunks.items()}


def fit_exit_heads(checkpoint: str | Path, out: str | Path, *, data: str | Path | None = None, places: str = "t1",
                   epochs: int = 100, lr: float = 1e-2, seed: int = 0, reporter: Reporter | None = None,
                   device: str | None = None) -> Path:
    """Fit exit heads at `places` ("t1": after T1; "layers": after every encoder layer of T1 and T2)
    on the classifier's training clips and write the classifier with them to `out` (a checkpoint
    file). Returns `out`."""
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
    names = exit_names(classifier.model, places)
    features = pooled_tokens(classifier, dataset, splits.train, names)
    labels = torch.from_numpy(dataset.labels[splits.train].astype(np.int64))
    torch.manual_seed(seed)
    model = add_exits(classifier.model, names)
    for name in names:
        head = model.exits[name].to("cpu").train()
        optimizer = torch.optim.Adam(head.parameters(), lr=lr)
        for _ in range(epochs):
            loss = F.cross_entropy(head.classify(features[name]), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        reporter.info(f"exit head {name}: training loss {loss.item():.4f} after {epochs} full-batch epochs")
    model.to(classifier.device).eval()
    save_checkpoint(out, model, classifier.config, {**classifier.meta, "exits": list(names)})
    return out
