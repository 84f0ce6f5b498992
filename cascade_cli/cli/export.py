"""`cascade export`: a finetuned classifier as ONNX graphs for runtimes without PyTorch."""

from __future__ import annotations

from pathlib import Path

import typer

from cascade_cli.cli.common import choice_enum, cli_command, err_console

ExportFormat = choice_enum("ExportFormat", ("onnx",))


@cli_command
def export(
    checkpoint: str = typer.Argument(..., metavar="RUN_OR_CHECKPOINT", help="Finetuning run directory (uses "
                                     "checkpoints/best.safetensors) or checkpoint file, with or without exit heads."),
    export_format: ExportFormat = typer.Option(..., "--format", help="What to write: onnx."),
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="Folder to write (must not exist unless "
                             "--overwrite): the graphs and model.json."),
    opset: int = typer.Option(18, "--opset", metavar="N", help="ONNX operator set to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out once the new export is "
                                   "written and verified."),
) -> None:
    """Export a finetuned classifier to ONNX, verified against PyTorch before anything is kept.

    Batch size and frame count are dynamic (frames up to the model's max_frames); the clips' lengths are an
    input. A checkpoint with exit heads also gets the cascade as stage graphs, one per exit. model.json holds
    what a runtime needs to prepare clips (layout, joint order, class names, test-time transform) and the
    graphs' inputs and outputs. ONNX Runtime must reproduce PyTorch's logits to within 1e-4 on clips of three
    lengths and batch sizes, or nothing is written. Needs the extra: pip install 'cascade-cli\\[onnx]'.

    Example:  cascade export runs/ft --format onnx --out runs/ft/onnx
              cascade predict runs/ft/onnx clip.npy --backend onnx
    """
    from cascade_cli.export import export_onnx

    metadata = export_onnx(checkpoint, out, opset=opset, overwrite=overwrite)
    check = metadata["verification"]
    graphs = 1 + len((metadata["cascade"] or {"stages": []})["stages"])
    shapes = ", ".join(f"{case['batch']}x{case['frames']}" for case in check["cases"])
    err_console.print(f"verified: largest |logit difference| to PyTorch {check['max_abs_logit_diff']:.3g} "
                      f"(allowed {check['tolerance']:g}; batch x frames {shapes})")
    typer.echo(f"wrote {out} ({graphs} graph(s), opset {opset}, {export_format.value})")
