"""`cascade predict --stream`: every window of a live pose stream classified, as a JSON-ready record.

A window's frames are mapped from the stream's layout to the checkpoint's (layouts.mapping), stacked
into one clip (persons missing from a frame are zeros with confidence 0, as in prepared data) and
fed through the checkpoint's own preprocessing, the very path `cascade predict` takes for a file.
With an exit threshold the window goes through the early-exit cascade; with a detector, the
anomaly decision of `cascade anomaly score` is added.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from cascade_cli.errors import UserError
from cascade_cli.inference import Classifier
from cascade_cli.inference.cascade import cascade_forward, check_rule, exit_places, require_exit_head
from cascade_cli.inference.inputs import InputClip, model_input
from cascade_cli.inference.scorer import refuse_flip_views
from cascade_cli.layouts import Layout, get_layout
from cascade_cli.layouts.mapping import JointMap, joint_map
from cascade_cli.predict import top_classes
from cascade_cli.stream.frames import Frame, MalformedLine, read_frames
from cascade_cli.stream.windows import Window, windows


@dataclass
class StreamSummary:
    frames: int = 0
    windows: int = 0
    skipped: int = 0  # windows that came due while the classifier was busy (live input only)
    malformed: int = 0  # lines reported and skipped
    latency_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        ms = np.array(self.latency_ms or [np.nan])
        return {"summary": {"frames": self.frames, "windows": self.windows, "skipped_windows": self.skipped,
                            "malformed_lines": self.malformed,
                            "latency_ms": {"p50": _number(np.percentile(ms, 50)), "p95": _number(np.percentile(ms, 95))}}}


def _number(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 3)


@dataclass
class StreamClassifier:
    """What classifying a window needs, checked once before the first frame is read."""

    classifier: Classifier
    layout: Layout  # the stream's
    mapping: JointMap | None  # None: the stream is in the checkpoint's own layout
    top_k: int = 5
    image_size: tuple[float, float] | None = None
    without_confidence: bool = False
    exit_threshold: float | None = None
    exit_rule: str = "max_softmax"
    detector: object = None  # an anomaly.detector.Detector
    policy: object = None  # its tuned policy

    def window_clip(self, window: Window) -> InputClip:
        """The window's frames as one clip (T, M, J, C) in the checkpoint's layout, M the most persons
        any of its frames holds (at least one: an empty frame is one absent person)."""
        M = max(1, *(len(f.persons) for f in window.frames))
        J, C = self.layout.num_joints, self.layout.coords
        frames = np.zeros((len(window.frames), M, J, C), np.float32)
        scored = any(f.confidence is not None for f in window.frames)
        confidence = np.zeros(frames.shape[:3], np.float32) if scored else None
        for t, frame in enumerate(window.frames):
            m = len(frame.persons)
            frames[t, :m] = frame.persons[..., :C]
            if scored:  # a frame without scores in a scored window: its persons count as seen
                confidence[t, :m] = 1.0 if frame.confidence is None else frame.confidence
        if self.mapping is not None:
            frames, confidence = self.mapping.apply(frames, confidence)
        return InputClip(f"frames {window.first}-{window.last}", frames, confidence)

    @torch.no_grad()
    def classify(self, window: Window) -> dict:
        """One window -> {"window": [first, last], "top": [...], "exit", "decision", ..., "latency_ms"}."""
        classifier = self.classifier
        clip = self.window_clip(window)
        flips = (False, True) if classifier.config.data.eval_flip else (False,)  # the run's test-time views
        x = torch.stack([model_input(clip, classifier, image_size=self.image_size, flipped=flipped,
                                     without_confidence=self.without_confidence) for flipped in flips])
        x = x.to(classifier.device)  # (views, T, J, C)
        backend = classifier.backend
        record: dict = {"window": [window.first, window.last]}
        if self.exit_threshold is None:  # logits and features averaged over the views, as the scorer does
            logits, pooled = backend.forward(x, None)
            logits, pooled = logits.mean(0, keepdim=True), pooled.mean(0, keepdim=True)
        else:
            logits, pooled, at = cascade_forward(backend, x, None, self.exit_threshold, self.exit_rule)
            record["exit"] = exit_places(backend)[int(at[0])]
        logits, pooled = logits.float().cpu().numpy(), pooled.float().cpu().numpy()
        if self.detector is None:
            probs = torch.from_numpy(logits[0]).softmax(-1)
            record["top"] = top_classes(probs, classifier.class_names, self.top_k)
        else:
            from cascade_cli.anomaly.alerts import judge

            judged = judge(self.detector, self.policy, logits, pooled, self.top_k)[0]
            record.update(top=judged["top"], decision=judged["decision"], fired=judged["fired"])
        record["latency_ms"] = round(1e3 * (time.perf_counter() - window.arrived), 3)
        if window.skipped:
            record["skipped_before"] = window.skipped
        return record


def stream_classifier(classifier: Classifier, *, layout: str | None = None, top_k: int = 5,
                      image_size: tuple[float, float] | None = None, without_confidence: bool = False,
                      exit_threshold: float | None = None, exit_rule: str = "max_softmax",
                      detector=None) -> StreamClassifier:
    """Check every option against the checkpoint before any frame is read: a layout without a mapping
    to the checkpoint's, an exit threshold without exit heads, a policy early exits cannot serve."""
    target = classifier.layout
    source = target if layout is None else get_layout(layout)
    mapping = None if layout is None or source.joint_names == target.joint_names else joint_map(source.name, target)
    policy = None
    if exit_threshold is not None:
        require_exit_head(classifier)
        check_rule(exit_rule, exit_threshold)
        refuse_flip_views(classifier)
    if detector is not None:
        from cascade_cli.anomaly.alerts import check_early_exit, load_policy

        policy = load_policy(detector)["policies"][0]
        if exit_threshold is not None:
            check_early_exit(policy, detector)
    if classifier.config.data.normalize == "image" and image_size is None:
        raise UserError(f"{classifier.path}: this model normalises by image size; pass --image-size WIDTH HEIGHT "
                        "(the pose estimator's frame size)")
    return StreamClassifier(classifier, source, mapping, top_k, image_size, without_confidence, exit_threshold,
                            exit_rule, detector, policy)


def classify_stream(streamer: StreamClassifier, lines: Iterable[str], *, window: int, stride: int,
                    live: bool = False, strict: bool = False,
                    summary: StreamSummary | None = None) -> Iterator[dict]:
    """A record per window of the stream `lines` (see stream.windows for live), and one
    {"malformed": {"line": n, "error": ...}} per malformed line (a UserError with `strict`). Counts
    go to `summary` as they happen, so a caller stopped early still has them."""
    summary = summary if summary is not None else StreamSummary()
    layout = streamer.layout
    counted = _counting(read_frames(lines, layout.num_joints, layout.coords), summary)
    for item in windows(counted, window, stride, live):
        if isinstance(item, MalformedLine):
            if strict:
                raise UserError(f"--stream {item} (--strict stops at the first malformed line)")
            summary.malformed += 1
            yield {"malformed": {"line": item.lineno, "error": item.message}}
            continue
        record = streamer.classify(item)
        summary.windows += 1
        summary.skipped += item.skipped
        summary.latency_ms.append(record["latency_ms"])
        yield record


def _counting(items: Iterator[tuple[int, Frame | MalformedLine]], summary: StreamSummary):
    for lineno, item in items:
        if isinstance(item, Frame):
            summary.frames += 1
        yield lineno, item
