"""Scoring a finetuned checkpoint on a split it never saw during training or model selection."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import torch

from cascade_cli.atomic import write_text
from cascade_cli.checkpoint import load_checkpoint, resolve_checkpoint
from cascade_cli.data.format import open_dataset
from cascade_cli.data.pipeline import model_input_shape, stratified_split
from cascade_cli.errors import UserError
from cascade_cli.model import build_classifier
from cascade_cli.progress import Reporter
from cascade_cli.train import make_loader, resolve_device, to_device


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> int:
    k = min(k, logits.shape[-1])
    return (logits.topk(k, dim=-1).indices == labels[:, None]).any(dim=-1).sum().item()


def default_report_path(checkpoint: Path, split: str) -> Path:
    """`RUN/eval_test.json` for a run's checkpoint, else next to the checkpoint file."""
    parent = checkpoint.parent
    run_dir = parent.parent if parent.name == "checkpoints" else parent
    return run_dir / f"eval_{split}.json"


@torch.no_grad()
def evaluate(checkpoint: str | Path, *, data_path: str | None = None, split: str = "test",
             device: str | None = None, batch_size: int | None = None, out: str | Path | None = None,
             reporter: Reporter | None = None) -> dict:
    reporter = reporter or Reporter(quiet=True)
    ckpt_path = resolve_checkpoint(checkpoint, "best")
    ckpt = load_checkpoint(ckpt_path)
    if ckpt.meta.get("kind") != "finetune":
        raise UserError(f"{ckpt_path}: a {ckpt.meta.get('kind')} checkpoint has no classifier; evaluate a finetuning run")
    cfg = ckpt.config
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
    loader = make_loader(ds, indices, cfg, train=False, batch_size=batch_size or cfg.eval_batch_size)
    top1 = top5 = 0
    for batch in loader:
        x, _, pad, labels = to_device(batch, dev)
        logits = model(x, pad).float()
        top1 += topk_correct(logits, labels, 1)
        top5 += topk_correct(logits, labels, 5)
    n = len(indices)
    report = {
        "checkpoint": str(ckpt_path), "dataset": ds.name, "dataset_path": str(ds.path), "protocol": protocol,
        "split": split, "clips": n, "top1": top1 / n, "top5": top5 / n,
        "model": {"variant": cfg.model.variant, "epoch": ckpt.meta.get("epoch"),
                  "selected_by": ckpt.meta.get("selected_by")},
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out_path = Path(out) if out else default_report_path(ckpt_path, split)
    write_text(out_path, json.dumps(report, indent=2) + "\n")
    report["report_path"] = str(out_path)
    return report
