"""A run directory, whose config.yaml is the whole truth about the run, written by one process at a time.

    RUN/config.yaml     the resolved config; a `history:` block lists every change --amend made
    RUN/metrics.jsonl   one line per epoch (and one per amendment, with "event": "amend")
    RUN/checkpoints/    best/last safetensors, trainer_state.pt
    RUN/.lock           held while a process writes the run

A resumed run must continue exactly what config.yaml records: a newly resolved config that differs
is refused with the differing keys named, unless the caller amends the run on purpose; the change
is then written into config.yaml's history and, by the loop, into the metrics log.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import yaml

from cascade_cli.atomic import write_text
from cascade_cli.checkpoint import checkpoint_meta
from cascade_cli.config import Config, config_from_dict, dump_yaml, to_dict
from cascade_cli.errors import UserError, yaml_error
from cascade_cli.locking import directory_lock

CONFIG = "config.yaml"
RUN_LOG = "run.log"  # everything the run said, quiet or not, flushed line by line
# What no amendment can change: the saved weights, optimizer state or input shape would not fit, or
# (the class subset) the task itself would change under a run.
FIXED_KEYS = tuple(f"model.{k}" for k in ("variant", "spatial_form", "d_model", "t1_layers", "t1_heads", "ffn_dim",
                                          "spatial_heads", "max_frames", "decoder", "t2_layers", "t2_heads",
                                          "fusion", "head")) + (
    "data.representation", "data.person", "data.classes", "data.exclude_classes", "finetune.pretrained",
    "finetune.t1", "finetune.t1_trainable_layers", "pretrain.optim.name", "finetune.optim.name",
    "pretrain.optim.schedule_unit", "finetune.optim.schedule_unit")


# Keys a stage never reads. A pretraining run shared by arms that differ only in their finetuning
# (cascade ablate) must not see those differences as changes to itself.
UNUSED_BY = {"pretrain": ("finetune.", "model.t2_", "model.fusion", "model.head", "continual."),
             "finetune": ("pretrain.", "continual."), "continual": ("pretrain.", "finetune.")}


def trainer_state_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "trainer_state.pt"


def finished_epochs(run_dir: Path) -> int:
    """Epochs the run has saved (from the last checkpoint's header), 0 before the first one."""
    last = run_dir / "checkpoints" / "last.safetensors"
    return int(checkpoint_meta(last).get("epoch") or 0) if last.is_file() else 0


def run_finished(run_dir: Path, epochs: int) -> bool:
    """All `epochs` epochs done, or the stage stopped early (patience)."""
    last = run_dir / "checkpoints" / "last.safetensors"
    meta = checkpoint_meta(last) if last.is_file() else {}
    return int(meta.get("epoch") or 0) >= epochs or bool(meta.get("stopped_early"))


def read_run_config(run_dir: Path) -> tuple[dict, list[dict]]:
    """config.yaml of a run as a plain dict, and its amendment history."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise UserError(f"{run_dir}: nothing to resume (no {CONFIG})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise yaml_error(path, exc) from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config sections")
    return data, list(data.pop("history", None) or [])


def write_run_config(run_dir: Path, cfg: Config, history: list[dict]) -> None:
    text = dump_yaml(cfg)
    if history:
        text += yaml.safe_dump({"history": history}, sort_keys=False)
    write_text(Path(run_dir) / CONFIG, text)


def _flat(data: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _nest(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def config_changes(old: Config, new: Config, stage: str) -> dict[str, list]:
    """Dotted key -> [old value, new value] for every leaf that differs and that `stage` reads."""
    before, after = _flat(to_dict(old)), _flat(to_dict(new))
    return {key: [before[key], after[key]] for key in after
            if before.get(key) != after[key] and not key.startswith(UNUSED_BY[stage])}


def describe_changes(changes: dict[str, list]) -> str:
    return ", ".join(f"{key} ({old!r} -> {new!r})" for key, (old, new) in changes.items())


def pending_amendment(run_dir: Path, history: list[dict] | None = None) -> dict | None:
    """The changes made since the last saved epoch, merged: {"epoch": e, "changes": {key: [old, new]}}.

    Trainer state is saved only at the end of an epoch, so amendments recorded after the last saved
    epoch are not yet in it, whichever session made them (also one that stopped before its first
    epoch ended); every process of a run reads the same answer from config.yaml."""
    if history is None:
        history = read_run_config(run_dir)[1]
    epoch = finished_epochs(run_dir)
    changes: dict[str, list] = {}
    for entry in history:
        if entry.get("after_epoch") == epoch:
            for key, (old, new) in entry["changes"].items():
                changes[key] = [changes.get(key, [old])[0], new]
    return {"epoch": epoch, "changes": changes} if changes else None


@dataclass
class RunState:
    path: Path
    resumable: bool  # a finished epoch (with its trainer state) is there to continue from
    amendment: dict | None  # pending_amendment(): what the trainer state does not know of yet
    amended_now: bool = False  # this process made the change (and logs it)


def check_unchanged(run_dir: Path, cfg: Config, stage: str, hint: str) -> tuple[Config, list[dict], dict[str, list]]:
    """The run's saved config, its history, and how `cfg` differs from it in what `stage` reads; a
    difference is refused unless `hint` is empty (the caller amends)."""
    data, history = read_run_config(run_dir)
    try:
        saved = config_from_dict(data)
    except UserError as exc:
        raise UserError(f"{run_dir / CONFIG}: {exc}") from None
    changes = config_changes(saved, cfg, stage)
    if changes and hint:
        raise UserError(f"{run_dir}: resuming would change {describe_changes(changes)}; a resumed run "
                        f"continues exactly what its {CONFIG} records; {hint}")
    return saved, history, changes


@contextlib.contextmanager
def open_run(run_dir: str | Path, cfg: Config, stage: str, *, resume: bool, amend: bool = False,
             hint: str = "pass --amend to apply and record the change, or use another --run-dir") -> Iterator[RunState]:
    """Create a fresh run, or check a resumed one against its config.yaml; hold the run's lock
    for the block. `hint` ends the message that refuses a changed config."""
    run_dir = Path(run_dir)
    if amend and not resume:
        raise UserError("--amend changes a run being resumed; pass it together with --resume")
    if resume:
        read_run_config(run_dir)  # fails early, and without creating anything, when there is no run
    elif (run_dir / CONFIG).exists():
        raise UserError(f"{run_dir}: run directory already holds a run; pass --resume to continue it "
                        "or choose another --run-dir")
    with directory_lock(run_dir, "run directory"):
        if not resume:
            if (run_dir / CONFIG).exists():  # made by another process between the check and the lock
                raise UserError(f"{run_dir}: run directory already holds a run; pass --resume to continue it")
            write_run_config(run_dir, cfg, [])
            yield RunState(run_dir, False, None)
            return
        saved, history, changes = check_unchanged(run_dir, cfg, stage, "" if amend else hint)
        if changes:  # recorded; keys the stage does not read keep their saved values
            amended = {**_flat(to_dict(saved)), **{key: new for key, (_, new) in changes.items()}}
            if fixed := [key for key in changes if key in FIXED_KEYS]:
                raise UserError(f"{run_dir}: {', '.join(fixed)} cannot change in a resumed run (the saved "
                                "weights or optimizer state would not fit); start a new run instead")
            history.append({"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            "after_epoch": finished_epochs(run_dir), "changes": changes})
            write_run_config(run_dir, config_from_dict(_nest(amended)), history)
        yield RunState(run_dir, trainer_state_path(run_dir).is_file(), pending_amendment(run_dir, history),
                       bool(changes))
