"""Training progress for people and for logs.

On a terminal a Rich bar shows the running loss, accuracy, samples/s and ETA of the epoch; in a
pipe or CI log the same facts arrive as one plain line per epoch, because carriage-return bars
turn logs into noise. `quiet` keeps only warnings and the final result.
"""

from __future__ import annotations

import time
from datetime import timedelta

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def _fmt_eta(seconds: float) -> str:
    return str(timedelta(seconds=int(max(seconds, 0))))


class Reporter:
    def __init__(self, quiet: bool = False, console: Console | None = None):
        # soft_wrap: a log line stays one line whatever the (assumed 80-column) width of a pipe.
        self.console = console or Console(soft_wrap=True)
        self.quiet = quiet
        self.live = self.console.is_terminal and not quiet
        self._progress: Progress | None = None
        self._task = None

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, highlight=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)

    # -- per-epoch progress ---------------------------------------------------------------
    def start_epoch(self, stage: str, epoch: int, epochs: int, steps: int) -> None:
        self._stage, self._epoch, self._epochs = stage, epoch, epochs
        self._started = time.perf_counter()
        if self.live:
            self._progress = Progress(
                TextColumn(f"{stage} {epoch}/{epochs}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=self.console,
                transient=True)
            self._progress.start()
            self._task = self._progress.add_task("", total=steps, stats="")

    def step(self, stats: dict[str, float], samples: int) -> None:
        if self._progress is None:
            return
        rate = samples / max(time.perf_counter() - self._started, 1e-9)
        text = "  ".join(f"{k} {v:.4f}" for k, v in stats.items()) + f"  {rate:.0f} samples/s"
        self._progress.update(self._task, advance=1, stats=text)

    def end_epoch(self, summary: dict[str, float], samples_per_s: float, eta_s: float) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self.quiet:
            return
        stats = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items())
        self.console.print(f"{self._stage} epoch {self._epoch}/{self._epochs}  {stats}  "
                           f"{samples_per_s:.0f} samples/s  ETA {_fmt_eta(eta_s)}", highlight=False)

