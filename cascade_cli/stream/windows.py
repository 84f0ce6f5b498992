"""Sliding windows over a stream of frames, with memory bounded by the window.

A window of `window` frames comes due every `stride` frames; the end of input flushes the frames that
no window has covered yet. Two ways of taking frames:

- paced (a file): the classifier pulls the next frames when it is ready, so every window is
  classified and none is skipped;
- live (standard input, a pose estimator): a reader thread takes frames the moment they arrive, so
  the estimator is never held up. When the classifier falls behind, the windows that came due
  meanwhile are skipped, counted in the next window's `skipped`, and the latest frames are
  classified instead: answers stay current and the ring of the last `window` frames is all that is
  kept, however fast frames come.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cascade_cli.stream.frames import Frame, MalformedLine


@dataclass
class Window:
    first: int  # number (from 1) of its first frame in the stream
    last: int  # and of its last
    frames: list[Frame]
    arrived: float  # time.perf_counter() when its last frame arrived, for latency
    skipped: int = 0  # windows that came due while the classifier was busy, dropped before this one


def windows(items: Iterable[tuple[int, Frame | MalformedLine]], window: int, stride: int,
            live: bool = False) -> Iterator[Window | MalformedLine]:
    """Windows over the frames of `items` (stream.frames.read_frames), and each malformed line in the
    order met; see the module's docstring for paced and live."""
    if window < 1 or stride < 1:
        raise ValueError(f"window {window} and stride {stride} must be at least 1 frame")
    if not live:
        return _paced(items, window, stride)
    feed = _Feed(window)  # the reader starts now, not at the first window asked for
    threading.Thread(target=feed.read, args=(items,), daemon=True, name="stream-reader").start()
    return _live(feed, window, stride)


def _paced(items, window: int, stride: int) -> Iterator[Window | MalformedLine]:
    ring: deque[Frame] = deque(maxlen=window)
    seen, covered, due = 0, 0, window
    for _, item in items:
        if isinstance(item, MalformedLine):
            yield item
            continue
        ring.append(item)
        seen += 1
        if seen == due:
            yield Window(seen - len(ring) + 1, seen, list(ring), time.perf_counter())
            covered, due = seen, seen + stride
    if seen > covered:  # the flush: frames at the end that no window covered yet
        yield Window(seen - len(ring) + 1, seen, list(ring), time.perf_counter())


class _Feed:
    """What the reader thread shares with the classifier: the ring, counts, malformed lines."""

    def __init__(self, window: int):
        self.ring: deque[Frame] = deque(maxlen=window)
        self.seen, self.arrived, self.done = 0, 0.0, False
        self.malformed: deque[MalformedLine] = deque()
        self.failure: BaseException | None = None
        self.changed = threading.Condition()

    def read(self, items) -> None:
        try:
            for _, item in items:
                with self.changed:
                    if isinstance(item, MalformedLine):
                        self.malformed.append(item)
                    else:
                        self.ring.append(item)
                        self.seen += 1
                        self.arrived = time.perf_counter()
                    self.changed.notify()
        except BaseException as exc:  # noqa: BLE001 - handed to the classifier's thread, which raises it
            self.failure = exc
        finally:
            with self.changed:
                self.done = True
                self.changed.notify()


def _live(feed: _Feed, window: int, stride: int) -> Iterator[Window | MalformedLine]:
    covered, due = 0, window
    while True:
        with feed.changed:
            feed.changed.wait_for(lambda: feed.seen >= due or feed.done or feed.malformed)
            malformed = list(feed.malformed)
            feed.malformed.clear()
            seen, frames, arrived, done = feed.seen, list(feed.ring), feed.arrived, feed.done
        yield from malformed
        if seen >= due:  # one window or more came due; the latest frames stand for them all
            yield Window(seen - len(frames) + 1, seen, frames, arrived, skipped=(seen - due) // stride)
            covered, due = seen, seen + stride
        elif done and not malformed:
            if feed.failure is not None:
                raise feed.failure
            if seen > covered:
                yield Window(seen - len(frames) + 1, seen, frames, arrived)
            return
