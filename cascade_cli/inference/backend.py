"""Backends: what runs the model once the inputs are prepared, so that every inference path (the
scorer, streams, the early-exit cascade) shares one preprocessing and differs only in this call.

    backend.forward(x, pad_mask)          -> (B, K) logits, (B, d) pooled features
    backend.cascade(x, pad_mask, leave)   -> model.exits.CascadeOutput, clips leaving where `leave` says
    backend.exits                         -> the exit names in the order a clip meets them

`TorchBackend` is the checkpoint's own PyTorch model; cascade_cli.export.runtime.OnnxBackend runs an
exported model with ONNX Runtime.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from cascade_cli.model.exits import CascadeOutput, LeaveRule


class Backend(Protocol):
    @property
    def exits(self) -> list[str]: ...

    def forward(self, x: Tensor, pad_mask: Tensor | None) -> tuple[Tensor, Tensor]: ...

    def cascade(self, x: Tensor, pad_mask: Tensor | None, leave: LeaveRule) -> CascadeOutput: ...


class TorchBackend:
    """The PyTorch model in this process, on its own device, in float32 or under `autocast` (a
    dtype; outputs are handed back in float32). It reads the model on every call, so exit heads
    added to it later (`cascade exits fit`) are seen."""

    def __init__(self, model, autocast: torch.dtype | None = None):
        self.model, self.autocast = model, autocast

    def _precision(self) -> torch.autocast:
        device = next(self.model.parameters()).device.type
        return torch.autocast(device, dtype=self.autocast, enabled=self.autocast is not None)

    @property
    def exits(self) -> list[str]:
        exits = getattr(self.model, "exits", None)
        return exits.order(self.model) if exits is not None else []

    def forward(self, x: Tensor, pad_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        with self._precision():
            pooled = self.model.embed(x, pad_mask)  # (B, d)
            return self.model.head(pooled).float(), pooled.float()

    def cascade(self, x: Tensor, pad_mask: Tensor | None, leave: LeaveRule) -> CascadeOutput:
        with self._precision():
            return self.model.exits.run(self.model, x, pad_mask, leave)


def as_backend(model_or_backend) -> Backend:
    """A CascadeFormer as a TorchBackend; a backend as it is."""
    return model_or_backend if hasattr(model_or_backend, "cascade") else TorchBackend(model_or_backend)
