"""Training progress for people and for logs.

On a terminal a Rich bar shows the running loss, accuracy, samples/s and ETA of the epoch; in a
pipe or CI log the same facts arrive as one plain line per epoch, because carriage-return bars
turn logs into noise. `quiet` hides progress only: warnings, problems and results always print.
"""

from __future__ import annotations

import contextlib
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Iterator, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cascade_cli import __version__


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
        self.steps_done = 0
        self._log: TextIO | None = None
        self._pending: list[str] = []  # lines said before a log file opened, written into it first

    def info(self, message: str) -> None:
        """Progress and context: hidden by quiet (never from the log file)."""
        self._to_log(message)
        if not self.quiet:
            self.console.print(message, highlight=False, markup=False)

    def result(self, message: str) -> None:
        """What the command produced (or a change it made): printed even when quiet."""
        self._to_log(message)
        self.console.print(message, highlight=False, markup=False)

    def warn(self, message: str) -> None:
        self._to_log(f"warning: {message}")
        self.console.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False)

    # -- the run's log file ------------------------------------------------------------------
    @contextlib.contextmanager
    def logging_to(self, path: Path) -> Iterator[None]:
        """Append every line this reporter says (quiet or not, progress bars aside) to `path` for the
        block, flushed line by line so a killed run loses nothing; lines said since the last log
        file closed come first. An error that ends the block is logged too."""
        with open(path, "a", buffering=1) as log:
            log.write(f"# {datetime.now().isoformat(timespec='seconds')}  cascade {__version__}  {' '.join(sys.argv)}\n")
            log.writelines(line + "\n" for line in self._pending)
            self._log, self._pending = log, []
            try:
                yield
            except BaseException as exc:
                log.write(f"{'interrupted' if isinstance(exc, KeyboardInterrupt) else 'error'}: {exc}\n")
                raise
            finally:
                self._log = None

    def _to_log(self, line: str) -> None:
        if self._log is not None:
            self._log.write(line + "\n")
        else:
            self._pending = [*self._pending[-999:], line]  # bounded: a reporter may never log to a file

    # -- per-epoch progress ---------------------------------------------------------------
    def start_epoch(self, stage: str, epoch: int, epochs: int, steps: int) -> None:
        self._stage, self._epoch, self._epochs = stage, epoch, epochs
        self._started = time.perf_counter()
        self.steps_done = 0
        if self.live:
            self._progress = Progress(
                TextColumn(f"{stage} {epoch}/{epochs}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=self.console,
                transient=True)
            self._progress.start()
            self._task = self._progress.add_task("", total=steps, stats="")

    def step(self, stats: dict[str, float], samples: int, advance: int = 1) -> None:
        """`advance` steps finished since the last call (updates come every few steps, as each one
        reads values back from the GPU)."""
        self.steps_done += advance
        if self._progress is None:
            return
        rate = samples / max(time.perf_counter() - self._started, 1e-9)
        text = "  ".join(f"{k} {v:.4f}" for k, v in stats.items()) + f"  {rate:.0f} samples/s"
        self._progress.update(self._task, advance=advance, stats=text)

    def end_epoch(self, summary: dict[str, float], samples_per_s: float, eta_s: float) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        stats = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items())
        line = f"{self._stage} epoch {self._epoch}/{self._epochs}  {stats}  {samples_per_s:.0f} samples/s  " \
               f"ETA {_fmt_eta(eta_s)}"
        self._to_log(line)
        if not self.quiet:
            self.console.print(line, highlight=False)

    # -- progress over a batch of items (files to prepare, clips to score) ----------------------
    @contextlib.contextmanager
    def track(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """Yield advance(n). A live bar on a terminal; in logs a line at every tenth of the way."""
        started, done, next_line = time.perf_counter(), 0, total / 10

        def rate() -> float:
            return done / max(time.perf_counter() - started, 1e-9)

        if self.live:
            bar = Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=self.console,
                           transient=True)
            task = bar.add_task("", total=total, rate="")
            with bar:
                def advance(n: int) -> None:
                    nonlocal done
                    done += n
                    bar.update(task, advance=n, rate=f"{rate():.0f}/s")

                yield advance
            return

        def advance(n: int) -> None:
            nonlocal done, next_line
            done += n
            if not self.quiet and (done >= next_line or done == total):
                next_line = done + total / 10
                eta = (total - done) / max(rate(), 1e-9)
                self.console.print(f"{description}: {done}/{total} ({rate():.0f}/s, ETA {_fmt_eta(eta)})",
                                   highlight=False)

        yield advance
