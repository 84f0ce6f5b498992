"""Self-describing checkpoints: safetensors weights whose header carries the config and metadata.

A checkpoint file is enough to rebuild and run its model: the resolved run config, the dataset
layout and class names travel in the safetensors metadata. Trainer state (optimizer, scheduler,
scaler, RNG, epoch) lives in a separate file next to it, because only `--resume` needs it and it
is several times larger than the weights.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

import cascade_cli
from cascade_cli.atomic import atomic_path
from cascade_cli.config import Config, config_from_dict, to_dict
from cascade_cli.errors import UserError

FORMAT = "cascade-checkpoint/1"
# What `cascade convert` / `download` write into their output folder, by checkpoint kind.
CONVERTED = {"finetune": "finetuned.safetensors", "pretrain": "pretrained.safetensors"}


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    config: Config
    meta: dict[str, Any]  # kind (pretrain|finetune), variant, dataset, layout, class_names, epoch, ...


def git_commit() -> str:
    """The source commit if the package runs from a git checkout, else ''."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(cascade_cli.__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def save_checkpoint(path: str | Path, model: torch.nn.Module, config: Config, meta: dict[str, Any]) -> None:
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    header = {
        "format": FORMAT,
        "config": json.dumps(to_dict(config)),
        "meta": json.dumps({"package_version": cascade_cli.__version__, **meta}),
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=header)


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    if header.get("format") != FORMAT:
        raise UserError(f"{path}: not a cascade checkpoint (missing '{FORMAT}' header); "
                        "official per-module .pt files need importing first")
    return Checkpoint(state, config_from_dict(json.loads(header["config"])), json.loads(header["meta"]))


def checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of a checkpoint from its header alone, without reading the weights."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    if header.get("format") != FORMAT:
        raise UserError(f"{path}: not a cascade checkpoint (missing '{FORMAT}' header)")
    return json.loads(header["meta"])


def save_trainer_state(path: str | Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise UserError(f"{path}: unreadable trainer state ({exc})") from None


def resolve_checkpoint(run_or_file: str | Path, which: str = "best", kind: str | None = None) -> Path:
    """A checkpoint file; a run directory, whose `checkpoints/<which>.safetensors` is used; or a
    folder written by `cascade convert` / `download`, whose checkpoint of `kind` (finetune or
    pretrain; without a kind, the finetuned one if there) is used."""
    path = Path(run_or_file)
    if path.is_dir():
        candidate = path / "checkpoints" / f"{which}.safetensors"
        if candidate.is_file():
            return candidate
        for stage in (kind,) if kind else CONVERTED:
            if (path / CONVERTED[stage]).is_file():
                return path / CONVERTED[stage]
        converted = CONVERTED[kind] if kind else " or ".join(CONVERTED.values())
        raise UserError(f"{path}: neither a run directory with checkpoints/{which}.safetensors (did the run "
                        f"finish its first epoch?) nor a converted folder with {converted}")
    if not path.exists():
        raise UserError(f"{path}: no such run directory or checkpoint file")
    return path
