"""The graphs an export writes: the whole classifier, and for a checkpoint with exit heads the
cascade cut into stages at its exits.

    classifier   x (B, T, J, C) float32, lengths (B,) int64 -> logits (B, K), pooled (B, d)
    stage i      its inputs (below), lengths -> exit_logits (B, K) and the tokens later stages need
    last stage   its inputs, lengths -> logits (B, K), pooled (B, d)

Lengths rather than a padding mask cross the graph boundary: any runtime can fill a length per clip,
and the graph rebuilds the mask (frame t >= length is padding), so padding stays a suffix as in
cascade_cli.model.padding_mask. Which clips leave at an exit is data-dependent control flow that a
static graph cannot express without running every layer for every clip; so each stage is its own
graph and the host decides between them (export.runtime), keeping only the clips that stay.

The state passed between stages has three names: `x`, the clips (first stage only); `tokens`, the
running tokens inside an encoder; `pretrained`, T1's output, which the fusion after T2 queries. A
stage hands its running tokens on as `next_tokens` (a graph's output cannot share an input's name),
the next stage's `tokens` (STATE).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from cascade_cli.model import CascadeFormer, padding_mask
from cascade_cli.model.exits import encoder_stages, exit_name

STATE = {"next_tokens": "tokens", "pretrained": "pretrained"}  # a stage's output -> the state it becomes


class ClassifierGraph(nn.Module):
    def __init__(self, model: CascadeFormer):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        pad = padding_mask(lengths, x.shape[1])  # (B, T)
        pooled = self.model.embed(x, pad)  # (B, d)
        return self.model.head(pooled), pooled


@dataclass(frozen=True)
class Stage:
    """Encoder layers [start, stop), counted over T1's layers then T2's, then the exit `exit` or,
    with exit None, the fusion and the main head."""

    start: int
    stop: int
    exit: str | None
    inputs: tuple[str, ...]  # the state it reads, `lengths` aside
    outputs: tuple[str, ...]

    @property
    def graph_inputs(self) -> tuple[str, ...]:
        """The ONNX input names, in StageGraph.forward's order."""
        return (self.inputs[0], "lengths", *self.inputs[1:])


def stage_plan(model: CascadeFormer) -> list[Stage]:
    """The stages of `model`'s cascade, cut after each of its exits, in the order a clip meets them;
    the last one (fusion and head) is empty of layers when an exit follows T2's last layer."""
    (_, t1_layers), (_, t2_layers) = encoder_stages(model)
    L1, L2 = len(t1_layers), len(t2_layers)
    names = [exit_name("t1", k, L1) for k in range(1, L1 + 1)] + [exit_name("t2", k, L2) for k in range(1, L2 + 1)]
    plan, start = [], 0
    for stop, name in enumerate(names, 1):
        if name in model.exits:
            outputs = ("exit_logits", *_produced(start, stop, L1))
            plan.append(Stage(start, stop, name, _inputs(start, L1, last=False), outputs))
            start = stop
    return [*plan, Stage(start, L1 + L2, None, _inputs(start, L1, last=True), ("logits", "pooled"))]


def _inputs(start: int, L1: int, last: bool) -> tuple[str, ...]:
    """What a stage starting after `start` layers reads, `lengths` aside."""
    if start == 0:
        return ("x",)
    if start < L1:
        return ("tokens",)
    if start == L1:
        return ("pretrained",)  # T2's first layer reads T1's output
    return ("tokens", "pretrained") if last else ("tokens",)  # the fusion queries with T1's output


def _produced(start: int, stop: int, L1: int) -> tuple[str, ...]:
    """What an exit stage hands on: the running tokens, and T1's output where the stage computed it."""
    if stop < L1:
        return ("next_tokens",)
    if stop == L1:
        return ("pretrained",)
    return ("next_tokens", "pretrained") if start < L1 else ("next_tokens",)


class StageGraph(nn.Module):
    """One stage of stage_plan as a module whose forward takes and returns the stage's named tensors."""

    def __init__(self, model: CascadeFormer, stage: Stage):
        super().__init__()
        self.model, self.stage = model, stage
        self.layers = [layer for _, layers in encoder_stages(model) for layer in layers]
        self.t1_layers = len(encoder_stages(model)[0][1])

    def forward(self, first: Tensor, lengths: Tensor, pretrained: Tensor | None = None) -> tuple[Tensor, ...]:
        """first: x (B, T, J, C) for the first stage, else tokens or pretrained (B, T, d);
        pretrained (B, T, d) where the stage takes it second."""
        stage, model = self.stage, self.model
        pad = padding_mask(lengths, first.shape[1])  # (B, T)
        tokens = model.t1.embed_frames(first) if stage.start == 0 else first  # (B, T, d)
        if stage.start == self.t1_layers:
            pretrained = tokens
        for k in range(stage.start, stage.stop):
            tokens = self.layers[k](tokens, src_key_padding_mask=pad)
            if k + 1 == self.t1_layers:
                pretrained = tokens
        if stage.exit is None:
            pooled = model.fuse(pretrained, tokens, pad)  # (B, d)
            return model.head(pooled), pooled
        named = {"next_tokens": tokens, "pretrained": pretrained}
        return (model.exits[stage.exit](tokens, pad), *(named[name] for name in stage.outputs[1:]))
