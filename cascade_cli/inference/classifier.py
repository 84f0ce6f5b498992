"""Loading a finetuned checkpoint as a ready classifier: the one way inference commands get a model.

A checkpoint carries its config, layout and class names, so it alone says how to build the model
and what its inputs must look like; `Classifier` keeps those facts next to the model in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cascade_cli.checkpoint import load_checkpoint, resolve_checkpoint
from cascade_cli.config import Config
from cascade_cli.data.format import PreparedDataset
from cascade_cli.data.pipeline import model_input_shape
from cascade_cli.data.registry import KNOWN_DATASETS
from cascade_cli.errors import UserError
from cascade_cli.inference.backend import Backend, TorchBackend
from cascade_cli.layouts import Layout
from cascade_cli.model import CascadeFormer, build_classifier
from cascade_cli.model.exits import add_exits
from cascade_cli.runtime import inference_dtype, resolve_device


@dataclass
class Classifier:
    model: CascadeFormer | None  # in eval mode, on `device`; None for an exported model (export.runtime)
    config: Config  # the run config the checkpoint was trained with
    meta: dict  # the checkpoint's metadata: dataset, protocol, layout, class names, epoch, ...
    path: Path  # the checkpoint file (an export's metadata file)
    device: torch.device
    backend: Backend | None = None  # what runs the model; None: `model` itself, in PyTorch
    precision: str = "fp32"  # inference autocast (runtime.inference_dtype): fp32 unless asked

    def __post_init__(self):
        if self.backend is None:
            self.backend = TorchBackend(self.model)

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def layout(self) -> Layout:
        return Layout.from_dict(self.meta["layout"])

    @property
    def input_shape(self) -> tuple[int, int]:
        """(joints, channels) of one model input frame, persons side by side."""
        return self.meta["num_joints"], self.meta["in_channels"]

    @property
    def zeroes_invisible_joints(self) -> bool:
        """Whether the model was trained on per-joint confidence (Penn: visibility) with joints at or
        below data.min_confidence zeroed, so an input must carry that channel to be seen the same way.
        Checkpoints from before the `confidence` entry fall back on the registry's dataset facts."""
        confidence = self.meta.get("confidence")
        if confidence is None:
            known = KNOWN_DATASETS.get(self.meta.get("dataset", ""))
            confidence = bool(known and known.confidence)
        return confidence and self.config.data.invisible == "zero"

    def check_dataset(self, dataset: PreparedDataset) -> None:
        """Refuse a dataset whose labels would mean other classes, or whose frames the model cannot take."""
        if list(dataset.class_names) != self.class_names:
            raise UserError(f"{dataset.path}: its class names differ from the ones {self.path} was trained on")
        shape = model_input_shape(dataset, self.config.data)
        if shape != self.input_shape:
            raise UserError(f"{dataset.path}: gives model inputs of {shape[0]}x{shape[1]}, the checkpoint expects "
                            f"{self.input_shape[0]}x{self.input_shape[1]}")


def load_classifier(checkpoint: str | Path, device: str | None = None, precision: str = "fp32") -> Classifier:
    """A finetuning run directory (its best checkpoint) or a checkpoint file -> Classifier in eval
    mode on `device` (default: the run's own device setting), run in `precision` (fp32, bf16, fp16)."""
    path = resolve_checkpoint(checkpoint, "best", kind="finetune")
    ckpt = load_checkpoint(path)
    if ckpt.meta.get("kind") != "finetune":
        raise UserError(f"{path}: a {ckpt.meta.get('kind')} checkpoint has no classifier; give a finetuning run "
                        "or a finetuned checkpoint")
    cfg, meta = ckpt.config, ckpt.meta
    model = build_classifier(cfg.model, meta["num_joints"], meta["in_channels"], len(meta["class_names"]))
    if exits := sorted({key.split(".")[1] for key in ckpt.state_dict if key.startswith("exits.")}):
        add_exits(model, tuple(exits))  # a checkpoint with exit heads (cascade_cli.model.exits)
    model.load_state_dict(ckpt.state_dict)
    dev = resolve_device(device or cfg.device)
    model = model.to(dev).eval()
    return Classifier(model, cfg, meta, path, dev, TorchBackend(model, inference_dtype(precision, dev)), precision)
