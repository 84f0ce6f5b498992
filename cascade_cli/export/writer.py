"""`cascade export --format onnx`: a finetuned checkpoint as ONNX graphs, verified against PyTorch,
with a sidecar (model.json) holding what any runtime needs to feed them.

    export/
      classifier.onnx   x (batch, frames, J, C) float32, lengths (batch,) int64 -> logits, pooled
      stage1.onnx ...   with exit heads: the cascade cut at its exits (export.graphs)
      model.json        preprocessing, class names, graph inputs and outputs, verification, and the
                        checkpoint's config and metadata (what `--backend onnx` rebuilds preprocessing from)

Batch and frame count are dynamic, frames up to the model's max_frames (its learned positions end
there). Everything is written into a temporary folder, verified (export.verify) and only then
renamed to the output folder, so a failed export leaves nothing.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import warnings
from pathlib import Path

import torch

from cascade_cli.atomic import atomic_directory, write_text
from cascade_cli.config import to_dict
from cascade_cli.errors import UserError
from cascade_cli.export.graphs import STATE, ClassifierGraph, StageGraph, stage_plan
from cascade_cli.export.runtime import FORMAT, METADATA, OnnxBackend, require_onnx
from cascade_cli.export.verify import TOLERANCE, verify
from cascade_cli.inference.cascade import FINAL
from cascade_cli.inference.classifier import Classifier, load_classifier

DEFAULT_OPSET = 18  # the lowest the torch.export-based exporter writes natively
CLASSIFIER = "classifier.onnx"
LEAVE = ("after each stage with an exit, a clip leaves when its exit_logits meet the rule "
         "(max_softmax: max softmax >= threshold; entropy: 1 - entropy / log K >= threshold; patience: the "
         "last `threshold` exits agree on the argmax); the clips that stay, and their rows of every state "
         "array, go on to the next stage")


def export_onnx(checkpoint: str | Path, out: str | Path, *, opset: int = DEFAULT_OPSET,
                overwrite: bool = False) -> dict:
    """A finetuning run (its best checkpoint) or checkpoint file -> the export folder `out`; returns
    its metadata, with the verification's largest logit difference. Fails, writing nothing, on a
    difference above TOLERANCE or an opset the installed exporter or ONNX Runtime cannot handle."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; choose another --out or pass --overwrite")
    require_onnx("cascade export", exporter=True)
    _check_opset(opset)
    classifier = load_classifier(checkpoint, "cpu")
    model, shapes = classifier.model, _shapes(classifier)
    with atomic_directory(out, overwrite) as tmp:
        graphs = {"classifier": {"file": CLASSIFIER, **_write_graph(ClassifierGraph(model), tmp / CLASSIFIER,
                                                                   ("x", "lengths"), ("logits", "pooled"),
                                                                   opset, shapes)}}
        cascade = None
        if classifier.backend.exits:
            stages = [{"file": f"stage{i}.onnx", "exit": stage.exit,
                       **_write_graph(StageGraph(model, stage), tmp / f"stage{i}.onnx", stage.graph_inputs,
                                      stage.outputs, opset, shapes)}
                      for i, stage in enumerate(stage_plan(model), 1)]
            cascade = {"exits": classifier.backend.exits, "final": FINAL, "leave": LEAVE, "state": STATE,
                       "stages": stages}
        metadata = _metadata(classifier, opset, graphs, cascade)
        report = verify(classifier, _exported(classifier, tmp, metadata, opset))
        worst = report["max_abs_logit_diff"]
        if not worst <= TOLERANCE:
            raise UserError(f"{out}: not written: ONNX Runtime's logits differ from PyTorch's by up to {worst:.3g}, "
                            f"above the {TOLERANCE:g} allowed (opset {opset})")
        metadata["verification"] = report
        write_text(tmp / METADATA, json.dumps(metadata, indent=2) + "\n")
    return metadata


def _check_opset(opset: int) -> None:
    """Opsets ONNX itself does not know fail at once; others may still fail once written (_write_graph).
    So does a torch older than its torch.export-based exporter (2.5), which dynamic shapes need."""
    import onnx

    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        raise UserError(f"cascade export needs the torch.export-based ONNX exporter of torch 2.5 or later; "
                        f"this is torch {torch.__version__}")

    newest = onnx.defs.onnx_opset_version()
    if not 1 <= opset <= newest:
        raise UserError(f"--opset {opset}: the installed onnx {onnx.__version__} knows opsets 1 to {newest}; "
                        f"the exporter's own is {DEFAULT_OPSET}")


def _shapes(classifier: Classifier) -> dict[str, list]:
    """Every tensor name the graphs use -> its shape, "batch" and "frames" being dynamic."""
    J, C = classifier.input_shape
    d, K = classifier.config.model.d_model, len(classifier.class_names)
    tokens = ["batch", "frames", d]
    return {"x": ["batch", "frames", J, C], "lengths": ["batch"], "tokens": tokens, "next_tokens": tokens,
            "pretrained": tokens, "exit_logits": ["batch", K], "logits": ["batch", K], "pooled": ["batch", d]}


def _example(name: str, shape: list) -> torch.Tensor:
    """A tracing input: batch 2, frames 2 (not 1, which torch.export would take as fixed)."""
    sizes = [2 if isinstance(n, str) else n for n in shape]
    return torch.full(sizes, 2, dtype=torch.int64) if name == "lengths" else torch.zeros(sizes)


def _write_graph(module: torch.nn.Module, path: Path, inputs: tuple[str, ...], outputs: tuple[str, ...],
                 opset: int, shapes: dict[str, list]) -> dict:
    """Export `module` to `path` with dynamic batch and frames (up to max_frames) -> the graph's
    inputs and outputs, name -> {shape, dtype}, in order."""
    import onnx

    model = module.model
    batch = torch.export.Dim("batch", min=1)
    frames = torch.export.Dim("frames", min=1, max=model.t1.pos_embedding.shape[1])
    dynamic = tuple({0: batch} if name == "lengths" else {0: batch, 1: frames} for name in inputs)
    with _quiet():
        program = torch.onnx.export(module, tuple(_example(name, shapes[name]) for name in inputs), dynamo=True,
                                    input_names=list(inputs), output_names=list(outputs), opset_version=opset,
                                    dynamic_shapes=dynamic, verbose=False)
    written = next(o.version for o in program.model_proto.opset_import if o.domain in ("", "ai.onnx"))
    if written != opset:
        raise UserError(f"--opset {opset}: the installed exporter (torch {torch.__version__}) cannot write it "
                        f"(it fell back to opset {written}); use {DEFAULT_OPSET} or a later one up to "
                        f"{onnx.defs.onnx_opset_version()}")
    program.save(str(path), external_data=False)
    return {key: {name: {"shape": shapes[name], "dtype": "int64" if name == "lengths" else "float32"}
                  for name in names} for key, names in (("inputs", inputs), ("outputs", outputs))}


@contextlib.contextmanager
def _quiet():
    """The exporter's progress lines, warnings and fallback tracebacks, kept off the command's output."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _exported(classifier: Classifier, folder: Path, metadata: dict, opset: int) -> Classifier:
    """The graphs just written, as predict --backend onnx will load them."""
    import onnxruntime

    try:
        backend = OnnxBackend(folder, metadata)
    except onnxruntime.capi.onnxruntime_pybind11_state.Fail as exc:
        raise UserError(f"--opset {opset}: onnxruntime {onnxruntime.__version__} cannot load the graphs "
                        f"({str(exc).splitlines()[0]})") from None
    return Classifier(None, classifier.config, classifier.meta, folder / METADATA, classifier.device, backend)


def _metadata(classifier: Classifier, opset: int, graphs: dict, cascade: dict | None) -> dict:
    """The sidecar: enough for a runtime in any language to prepare clips the way the model's test
    split was prepared and to feed the graphs."""
    import onnx
    import onnxruntime

    cfg, meta = classifier.config, classifier.meta
    J, C = classifier.input_shape
    return {
        "format": FORMAT,
        "source": {"checkpoint": str(classifier.path.resolve()), "epoch": meta.get("epoch"),
                   "dataset": meta.get("dataset"), "protocol": meta.get("protocol"), "variant": cfg.model.variant},
        "exporter": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                     "opset": opset},
        "class_names": classifier.class_names,
        "input": {
            "layout": meta["layout"],  # joint names in the order the model takes them, coordinates, bones
            "frame_shape": [J, C],  # one model input frame (persons side by side) after the transform
            "max_frames": cfg.model.max_frames,
            "confidence_channel": classifier.zeroes_invisible_joints,  # inputs carry it last; <= min_confidence: zeroed
            "transform": to_dict(cfg.data),  # the test-time settings of cascade_cli.data.pipeline.transform_clip
            "test_time_flip": cfg.data.eval_flip,  # average the logits of the clip and its mirror
            "padding": "clips of a batch are padded with zero frames at the end; `lengths` counts the real ones",
        },
        "graphs": graphs,
        "cascade": cascade,
        "checkpoint": {"config": to_dict(cfg), "meta": meta},
    }
