"""Where and in which precision a model runs: one policy for training and for inference.

Training and every inference command (evaluate, predict, and what comes later) resolve the device
and the autocast dtype here, so a checkpoint runs on the same terms whichever command loads it.
"""

from __future__ import annotations

import torch

from cascade_cli.data.pipeline import Batch
from cascade_cli.errors import UserError
from cascade_cli.model import padding_mask


def resolve_device(spec: str) -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N` -> a device that exists on this machine, or a UserError."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"config key 'device': {spec!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"config key 'device': {spec!r} requested but no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"config key 'device': {spec!r} but only {torch.cuda.device_count()} GPU(s) visible")
    return device


def cpu_has_native_bf16() -> bool:
    """AMX tiles (Intel Sapphire Rapids and later) multiply bf16 matrices several times faster than
    float32; without them CPU bf16 is emulated and slower, so auto stays in float32 there."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def autocast_dtype(amp: str, device: torch.device) -> tuple[torch.dtype | None, str | None]:
    """The autocast dtype for config key `amp` on `device` (None: float32), and a warning if the
    request cannot be honoured. auto: bf16 on GPUs that have it (no loss scaling needed), else fp16
    with a scaler; bf16 on CPUs with AMX; float32 on other CPUs."""
    if amp == "off":
        return None, None
    if device.type == "cuda":
        if amp == "auto":
            return (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16), None
        return (torch.bfloat16 if amp == "bf16" else torch.float16), None
    if amp == "fp16":
        return None, f"amp=fp16 needs CUDA; training in float32 on {device}"
    if amp == "auto":
        return (torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None), None
    return torch.bfloat16, None


def to_device(batch: Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A collated batch on `device`: x (B, T, J, C), lengths (B,), padding mask (B, T), labels (B,)."""
    x = batch.x.to(device, non_blocking=True)
    lengths = batch.lengths.to(device)
    return x, lengths, padding_mask(lengths, x.shape[1]), batch.labels.to(device)
