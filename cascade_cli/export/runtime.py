"""An exported folder run with ONNX Runtime: a Classifier whose backend is the ONNX graphs, so that
predict, streams and the early-exit cascade take the very preprocessing they take with PyTorch.

    classifier = load_exported("export/")            # model.json + classifier.onnx (+ stage*.onnx)
    scores = score_inputs(classifier, ["clip.npy"])   # as with load_classifier, the model call aside

The cascade runs its stage graphs one after another and decides between them, here in the host,
which clips leave (inference.cascade.LeaveRule, the rule the PyTorch cascade uses): the clips that
stay go on to the next stage as a smaller batch, as in model.exits.ExitHeads.run.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from cascade_cli.config import config_from_dict
from cascade_cli.errors import UserError, require_directory
from cascade_cli.export.graphs import STATE
from cascade_cli.inference.classifier import Classifier
from cascade_cli.model.exits import CascadeOutput, LeaveRule

FORMAT = "cascade-onnx/1"
METADATA = "model.json"  # the sidecar: preprocessing, graphs, verification, the checkpoint's config
EXTRA = "pip install 'cascade-cli[onnx]'"


def require_onnx(what: str, exporter: bool = False) -> None:
    """One line naming the extra to install, instead of an ImportError deep inside a command; the
    exporter also needs onnxscript."""
    needed = ("onnx", "onnxruntime", *(("onnxscript",) if exporter else ()))
    if missing := [name for name in needed if importlib.util.find_spec(name) is None]:
        raise UserError(f"{what} needs {', '.join(missing)}, of the onnx extra: {EXTRA}")


def lengths_of(x: Tensor, pad_mask: Tensor | None) -> np.ndarray:
    """(B, T) padding mask -> (B,) int64 real frames per clip, what the graphs take (padding is a
    suffix: cascade_cli.model.padding_mask)."""
    if pad_mask is None:
        return np.full(len(x), x.shape[1], dtype=np.int64)
    return (~pad_mask).sum(1).cpu().numpy().astype(np.int64)


class OnnxBackend:
    """inference.backend.Backend over the graphs of an export folder, on the CPU. threads=0 lets
    ONNX Runtime choose (all cores); benchmarks pin 1."""

    def __init__(self, folder: Path, metadata: dict, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads

        def session(graph: dict):
            return ort.InferenceSession(str(folder / graph["file"]), options, providers=["CPUExecutionProvider"])

        self.classifier = session(metadata["graphs"]["classifier"])
        cascade = metadata.get("cascade") or {"stages": []}
        self.stages = [(stage, session(stage)) for stage in cascade["stages"]]

    @property
    def exits(self) -> list[str]:
        return [stage["exit"] for stage, _ in self.stages if stage["exit"] is not None]

    def forward(self, x: Tensor, pad_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        logits, pooled = self.classifier.run(None, {"x": x.cpu().numpy(), "lengths": lengths_of(x, pad_mask)})
        return torch.from_numpy(logits), torch.from_numpy(pooled)  # (B, K), (B, d)

    def cascade(self, x: Tensor, pad_mask: Tensor | None, leave: LeaveRule) -> CascadeOutput:
        clips = torch.arange(len(x))
        state = {"x": x.cpu().numpy(), "lengths": lengths_of(x, pad_mask)}  # every array (A, ...) of the A clips left
        exits: dict[str, Tensor] = {}
        for stage, graph in self.stages:
            out = dict(zip(stage["outputs"], graph.run(None, {name: state[name] for name in stage["inputs"]})))
            if stage["exit"] is None:
                return CascadeOutput(torch.from_numpy(out["logits"]), torch.from_numpy(out["pooled"]), clips, exits)
            z = torch.from_numpy(out.pop("exit_logits"))  # (A, K)
            exits[stage["exit"]] = z.new_full((len(x), z.shape[-1]), float("nan")).index_copy(0, clips, z)
            state.update({STATE[name]: value for name, value in out.items()})
            keep = ~leave(stage["exit"], z, clips)
            state, clips = {name: v[keep.numpy()] for name, v in state.items()}, clips[keep]
            if not len(clips):  # everyone left: the rest of the model never runs
                d = state["tokens" if "tokens" in state else "pretrained"].shape[-1]
                return CascadeOutput(z[:0], torch.zeros(0, d), clips, exits)
        raise ValueError("an export's cascade ends with the main head's stage")


def read_metadata(folder: str | Path) -> dict:
    path = Path(folder) / METADATA
    require_directory(folder, "export folder (from `cascade export`)")
    try:
        metadata = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found; give a folder written by `cascade export`") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise UserError(f"{path}: not the metadata of a `cascade export` folder (format {FORMAT})")
    return metadata


def load_exported(folder: str | Path, threads: int = 0) -> Classifier:
    """An export folder -> Classifier on the CPU whose backend is ONNX Runtime; its config, layout
    and class names are the checkpoint's, carried in the sidecar, so preprocessing is unchanged."""
    require_onnx("--backend onnx")
    folder = Path(folder)
    metadata = read_metadata(folder)
    checkpoint = metadata["checkpoint"]
    return Classifier(None, config_from_dict(checkpoint["config"]), checkpoint["meta"], folder / METADATA,
                      torch.device("cpu"), OnnxBackend(folder, metadata, threads))
