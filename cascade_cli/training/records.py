"""What a run leaves for people and their tools besides checkpoints, written as it goes.

    RUN/metrics.jsonl   one JSON line per epoch, and one per event (amendment, early stop)
    RUN/metrics.csv     the epoch lines as a table, rewritten after every epoch (spreadsheets, pandas)
    RUN/tensorboard/    event files with every number of every epoch, with log.tensorboard=true
    RUN/checkpoints/epoch-NNNN.safetensors   the last k epochs, with keep_last=k

(RUN/run.log, the run's whole log, is the Reporter's: see progress.Reporter.logging_to.)
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

from cascade_cli.atomic import append_line, atomic_path, write_text
from cascade_cli.errors import UserError

METRICS, METRICS_CSV, TENSORBOARD = "metrics.jsonl", "metrics.csv", "tensorboard"


def require_tensorboard():
    """torch's SummaryWriter class, or a UserError when the optional tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("log.tensorboard=true needs the tensorboard package: pip install 'cascade-cli[tensorboard]' "
                        "(or tensorboard itself)") from None
    return SummaryWriter


class RunRecords:
    def __init__(self, run_dir: Path, tensorboard: bool):
        self.run_dir = run_dir
        self.writer = require_tensorboard()(log_dir=str(run_dir / TENSORBOARD)) if tensorboard else None

    def epoch(self, record: dict) -> None:
        append_line(self.run_dir / METRICS, json.dumps(record))
        self._rewrite_csv()
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "best_epoch"):
                    self.writer.add_scalar(f"{record['stage']}/{key}", value, record["epoch"])
            self.writer.flush()

    def event(self, record: dict) -> None:
        append_line(self.run_dir / METRICS, json.dumps(record))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def _rewrite_csv(self) -> None:
        rows = [row for line in (self.run_dir / METRICS).read_text().splitlines()
                if "event" not in (row := json.loads(line))]
        columns = list(dict.fromkeys(key for row in rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text(self.run_dir / METRICS_CSV, buffer.getvalue())


def keep_epoch_checkpoint(ckpt_dir: Path, epoch: int, keep_last: int, source: str = "last.safetensors") -> None:
    """Copy `source` (the epoch's evaluated weights) to epoch-NNNN.safetensors and delete all but the
    newest `keep_last`."""
    if keep_last <= 0:
        return
    with atomic_path(ckpt_dir / f"epoch-{epoch:04d}.safetensors") as tmp:
        shutil.copyfile(ckpt_dir / source, tmp)
    for old in sorted(ckpt_dir.glob("epoch-*.safetensors"))[:-keep_last]:
        old.unlink()
