"""Where and in which precision a model runs: one policy for training and for inference.

Training and every inference command (evaluate, predict, and what comes later) resolve the device
and the autocast dtype here, so a checkpoint runs on the same terms whichever command loads it.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

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


def cpu_bf16_units() -> str | None:
    """The bf16 matrix hardware torch reports on this CPU, or None where bf16 would be emulated.

    With AMX tiles, AVX-512 BF16 or Arm's BF16 instructions, a bf16 matrix product runs two to
    four times faster than float32 (a Penn-sized linear layer on an AVX-512 BF16 CPU: 2.9x);
    without them bf16 is converted to float32 around each product and runs slower. torch's own
    checks decide, never the vendor's name."""
    if _torch_reports(torch.cpu, "_is_amx_tile_supported"):
        return "AMX bf16 tiles"
    if _torch_reports(torch.cpu, "_is_avx512_bf16_supported"):
        return "AVX-512 BF16 instructions"
    # On Arm, oneDNN's bf16 check is the BF16 extension (BFMMLA); on x86 it only means AVX-512.
    if platform.machine().lower() in ("aarch64", "arm64") and _torch_reports(torch.ops.mkldnn,
                                                                              "_is_mkldnn_bf16_supported"):
        return "Arm BF16 instructions"
    return None


def _torch_reports(namespace, check: str) -> bool:
    """A private torch capability check, False where this torch version lacks it."""
    try:
        return bool(getattr(namespace, check)())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class Precision:
    """What config key `amp` comes to on a device: the autocast dtype (None: float32), why, for the
    run log, and a warning where the request cannot be honoured."""

    dtype: torch.dtype | None
    reason: str
    warning: str | None = None

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.") if self.dtype is not None else "float32"


def choose_precision(amp: str, device: torch.device) -> Precision:
    """auto: bf16 on GPUs that have it (no loss scaling needed), else fp16 with a scaler; bf16 on
    CPUs with bf16 matrix hardware (cpu_bf16_units); float32 on other CPUs. off, bf16 and fp16 are
    taken as asked where the device can (fp16 needs CUDA)."""
    if amp == "off":
        return Precision(None, "amp=off")
    if device.type == "cuda":
        if amp != "auto":
            return Precision(torch.bfloat16 if amp == "bf16" else torch.float16, f"amp={amp}")
        if torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, "amp=auto: this GPU computes in bf16")
        return Precision(torch.float16, "amp=auto: this GPU has no bf16, so fp16 with loss scaling")
    if amp == "fp16":
        return Precision(None, "amp=fp16 needs CUDA", f"amp=fp16 needs CUDA; training in float32 on {device}")
    if amp == "bf16":
        return Precision(torch.bfloat16, "amp=bf16")
    units = cpu_bf16_units() if device.type == "cpu" else None
    if units is None:
        return Precision(None, f"amp=auto: this {device.type.upper()} has no bf16 matrix hardware torch knows "
                               "(AMX, AVX-512 BF16, Arm BF16), where bf16 runs slower; amp=bf16 forces it")
    return Precision(torch.bfloat16, f"amp=auto: this CPU has {units}; amp=off trains in float32")


def inference_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of inference asked for as fp32 (None), bf16 or fp16. Inference stays in
    float32 unless asked, whatever training used: reported accuracies are float32's, and a bf16
    model can flip a near tie."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16" and device.type == "cuda":
        return torch.float16
    if precision == "fp16":
        raise UserError(f"--precision fp16 needs a CUDA device, not {device}; use bf16 or fp32")
    raise UserError(f"--precision {precision}: use fp32, bf16 or fp16")


def to_device(batch: Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A collated batch on `device`: x (B, T, J, C), lengths (B,), padding mask (B, T), labels (B,)."""
    x = batch.x.to(device, non_blocking=True)
    lengths = batch.lengths.to(device)
    return x, lengths, padding_mask(lengths, x.shape[1]), batch.labels.to(device)
