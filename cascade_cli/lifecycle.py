"""A model's lifecycle in one place: prepare -> pretrain -> finetune -> evaluate.

Two things live here and nowhere else, so the command line and the library behave alike:

* **How a stage's config is resolved**, each step overriding the one before: the defaults; for a
  finetune, the config of its pretraining run (so the model settings match the pretrained T1); for
  a resumed run, its own config.yaml instead; the preset; each --set; the explicit flags (data,
  seed, device, compile). `cascade pretrain/finetune` and `lifecycle.pretrain/finetune` both call
  `stage_config`.
* **The chain of stages** (`run_stages`, and `run` with the synthetic data of the demo): a stage
  whose run finished is skipped, one that was interrupted resumes, and a stage whose recorded
  config differs from the one asked for is refused rather than silently reused. `cascade demo` and
  `cascade ablate` run their stages through it.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Sequence

from cascade_cli.atomic import write_text
from cascade_cli.checkpoint import load_checkpoint, resolve_checkpoint
from cascade_cli.config import Config, load_config, to_dict
from cascade_cli.data.format import open_dataset
from cascade_cli.errors import UserError
from cascade_cli.evaluate import evaluate
from cascade_cli.progress import Reporter
from cascade_cli.training import stages
from cascade_cli.training.run_dir import CONFIG, check_unchanged, read_run_config, run_finished

STAGES = ("pretrain", "finetune")
WALL_TIME = "wall_time.json"  # written into a training run when the lifecycle finished it


def default_run_dir(stage: str) -> Path:
    return Path("runs") / f"{stage}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def stage_config(stage: str, *, run_dir: str | Path | None = None, resume: bool = False,
                 pretrained: str | Path | None = None, preset: str | None = None, overrides: Sequence[str] = (),
                 data: str | Path | None = None, seed: int | None = None, device: str | None = None,
                 compile: bool = False) -> Config:
    """The resolved config of a pretrain or finetune run (see the module docstring for the order)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    if resume:
        if run_dir is None:
            raise UserError("--resume needs --run-dir of the run to continue")
        base = read_run_config(Path(run_dir))[0]
    elif stage == "finetune":
        if not pretrained:
            raise UserError("finetuning needs a pretrained T1: pass --pretrained RUN_DIR_OR_CHECKPOINT")
        base = to_dict(load_checkpoint(resolve_checkpoint(pretrained, "best", kind="pretrain")).config)
    else:
        base = None
    cfg = load_config(preset, overrides, base=base)
    if data is not None:
        cfg.data.path = str(data)
    if seed is not None:
        cfg.seed = seed
    if device is not None:
        cfg.device = device
    cfg.compile = cfg.compile or compile
    if pretrained:
        cfg.finetune.pretrained = str(pretrained)
    return cfg


def pretrain(run_dir: str | Path | None = None, *, resume: bool = False, amend: bool = False,
             reporter: Reporter | None = None, **settings) -> Path:
    """Masked pretraining of T1 into `run_dir` (default runs/pretrain-<time>); `settings` are those
    of stage_config (preset, overrides, data, seed, device, compile). Returns the selected checkpoint."""
    cfg = stage_config("pretrain", run_dir=run_dir, resume=resume, **settings)
    return stages.pretrain(cfg, run_dir or default_run_dir("pretrain"), reporter or Reporter(quiet=True),
                           resume=resume, amend=amend)


def finetune(run_dir: str | Path | None = None, *, pretrained: str | Path | None = None, resume: bool = False,
             amend: bool = False, reporter: Reporter | None = None, **settings) -> Path:
    """Cascading finetuning from `pretrained` (a pretraining run or checkpoint, whose config the
    run inherits) into `run_dir`; `settings` as for pretrain. Returns the checkpoint selected on
    validation."""
    cfg = stage_config("finetune", run_dir=run_dir, resume=resume, pretrained=pretrained, **settings)
    return stages.finetune(cfg, run_dir or default_run_dir("finetune"), reporter or Reporter(quiet=True),
                           resume=resume, amend=amend)


# ----------------------------------------------------------------------------------------------
# The chain


@dataclass
class LifecycleResult:
    data: Path
    pretrain_dir: Path
    finetune_dir: Path
    report: dict  # the test-split evaluation of the finetuned model
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage, recorded when it finished


def _stage(stage: str, cfg: Config, run_dir: Path, reporter: Reporter, hint: str) -> float:
    """Run one training stage to its end, or skip it when a run with this very config finished it;
    returns its wall time (as recorded, for a stage finished earlier)."""
    epochs = getattr(cfg, stage).epochs
    started = (run_dir / CONFIG).is_file()
    if started:
        check_unchanged(run_dir, cfg, stage, hint)
        timing = run_dir / WALL_TIME
        if run_finished(run_dir, epochs) and timing.is_file():
            reporter.info(f"{stage}: finished already in {run_dir}")
            return float(json.loads(timing.read_text())["seconds"])
    t0 = time.perf_counter()
    getattr(stages, stage)(cfg, run_dir, reporter, resume=started)
    seconds = time.perf_counter() - t0
    write_text(run_dir / WALL_TIME, json.dumps({"seconds": seconds}))
    return seconds


def run_stages(cfg: Config, pretrain_dir: str | Path, finetune_dir: str | Path, reporter: Reporter | None = None, *,
               hint: str = "use another output directory", first_step: int = 1, steps: int = 3) -> LifecycleResult:
    """Pretrain, finetune and evaluate on the test split, all with `cfg`; finished stages are
    skipped and interrupted ones resumed. `first_step`/`steps` number the progress lines."""
    reporter = reporter or Reporter(quiet=True)
    pretrain_dir, finetune_dir = Path(pretrain_dir), Path(finetune_dir)
    seconds = {}
    reporter.info(f"[{first_step}/{steps}] masked pretraining of T1")
    seconds["pretrain"] = _stage("pretrain", cfg, pretrain_dir, reporter, hint)
    cfg = copy.deepcopy(cfg)
    cfg.finetune.pretrained = str(pretrain_dir)
    reporter.info(f"[{first_step + 1}/{steps}] cascading finetuning")
    seconds["finetune"] = _stage("finetune", cfg, finetune_dir, reporter, hint)
    reporter.info(f"[{first_step + 2}/{steps}] evaluating on the test split")
    t0 = time.perf_counter()
    report = evaluate(finetune_dir)
    seconds["evaluate"] = time.perf_counter() - t0
    return LifecycleResult(Path(cfg.data.path), pretrain_dir, finetune_dir, report, seconds)


def run(out_dir: str | Path, *, data: str | Path | None = None, preset: str = "demo", overrides: Sequence[str] = (),
        seed: int | None = None, device: str | None = None, fresh: bool = False,
        reporter: Reporter | None = None) -> LifecycleResult:
    """The whole lifecycle under `out_dir`: the built-in synthetic data (unless `data` names a
    prepared dataset), then run_stages with the preset for both training stages. Without
    data.protocol the dataset's first protocol is used."""
    from cascade_cli.data.synthetic import make_synthetic

    reporter = reporter or Reporter(quiet=True)
    out_dir = Path(out_dir)
    if fresh and out_dir.exists():
        shutil.rmtree(out_dir)
    data_dir = Path(data) if data is not None else out_dir / "data"
    if data is None and not (data_dir / "dataset.yaml").is_file():
        reporter.info(f"[1/4] preparing synthetic data in {data_dir}")
        make_synthetic(data_dir)
    cfg = stage_config("pretrain", preset=preset, overrides=overrides, data=data_dir, seed=seed, device=device)
    if not cfg.data.protocol:
        protocols = list(open_dataset(data_dir).protocols)
        cfg.data.protocol = protocols[0]
        if len(protocols) > 1:
            reporter.info(f"using protocol {protocols[0]} of {', '.join(protocols)} (choose with --set data.protocol=...)")
    return run_stages(cfg, out_dir / "pretrain", out_dir / "finetune", reporter,
                      hint="run again with --fresh to start over, or use another --out", first_step=2, steps=4)
