"""Export: a finetuned classifier as verified ONNX graphs, and ONNX Runtime as an inference backend.

    export_onnx("runs/ft", "export/")                 # graphs + model.json, verified against PyTorch
    classifier = load_exported("export/")             # a Classifier whose model runs in ONNX Runtime

onnx, onnxscript (the exporter's) and onnxruntime are the optional extra `cascade-cli[onnx]`; this
package imports them only when called.
"""

from cascade_cli.export.runtime import OnnxBackend, load_exported
from cascade_cli.export.writer import export_onnx

__all__ = ["OnnxBackend", "export_onnx", "load_exported"]
