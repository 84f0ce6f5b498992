import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import cascade_cli.training.loop as loop
import cascade_cli.training.optim as optim
import cascade_cli.training.records as records
import cascade_cli.training.stages as train
from cascade_cli.checkpoint import load_checkpoint
from cascade_cli.config import load_config
from cascade_cli.data.format import open_dataset
from cascade_cli.errors import UserError
from cascade_cli.progress import Reporter
from tests.conftest import TINY

QUIET = Reporter(quiet=True)


def tiny_config(data, *extra):
    return load_config(None, [*TINY, *extra], base={"data": {"path": str(data)}})


def interrupt_after(monkeypatch, stop_epoch):
    """Simulate a kill right after `stop_epoch` finished and was saved."""
    real = records.append_line

    def append_then_maybe_die(path, line):
        real(path, line)
        if json.loads(line)["epoch"] == stop_epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(records, "append_line", append_then_maybe_die)


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_resume_gives_identical_weights(tiny_dataset, tmp_path, monkeypatch, stage):
    overrides = ["pretrain.epochs=4", "finetune.epochs=4", "finetune.optim.warmup=0.25",
                 "finetune.optim.schedule_unit=step", "data.rotate=0.3"]
    cfg = tiny_config(tiny_dataset, *overrides)
    if stage == "finetune":
        train.pretrain(tiny_config(tiny_dataset, "pretrain.epochs=1"), tmp_path / "pre", QUIET)
        cfg.finetune.pretrained = str(tmp_path / "pre")
    run = getattr(train, stage)

    run(cfg, tmp_path / "straight", QUIET)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            run(cfg, tmp_path / "resumed", QUIET)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.safetensors").meta["epoch"] == 2
    run(cfg, tmp_path / "resumed", QUIET, resume=True)

    straight = load_file(tmp_path / "straight" / "checkpoints" / "last.safetensors")
    resumed = load_file(tmp_path / "resumed" / "checkpoints" / "last.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
    # A different seed really changes the result (the comparison above is not vacuous).
    run(tiny_config(tiny_dataset, *overrides, "seed=3") if stage == "pretrain" else
        _with(cfg, seed=3), tmp_path / "other", QUIET)
    other = load_file(tmp_path / "other" / "checkpoints" / "last.safetensors")
    assert any(not torch.equal(straight[k], other[k]) for k in straight)


def _with(cfg, **changes):
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def test_model_selection_never_sees_test_clips(tiny_dataset, tmp_path, monkeypatch):
    seen: list[np.ndarray] = []
    real = loop.ClipDataset

    def recording(ds, indices, *args, **kwargs):
        seen.append(np.asarray(indices))
        return real(ds, indices, *args, **kwargs)

    monkeypatch.setattr(loop, "ClipDataset", recording)
    cfg = tiny_config(tiny_dataset, "pretrain.select=val")
    train.pretrain(cfg, tmp_path / "pre", QUIET)
    cfg.finetune.pretrained = str(tmp_path / "pre")
    train.finetune(cfg, tmp_path / "ft", QUIET)

    ds = open_dataset(tiny_dataset)
    test = set(ds.split_indices("xsub", "test").tolist())
    train_split = set(ds.split_indices("xsub", "train").tolist())
    used = set(np.concatenate(seen).tolist())
    assert used and not used & test
    assert used == train_split
    best = load_checkpoint(tmp_path / "ft" / "checkpoints" / "best.safetensors")
    assert best.meta["selected_by"] == "validation top-1"
    metrics = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    # the best validation top-1; among equals, the lowest validation loss, then the earliest epoch
    assert best.meta["epoch"] == max(metrics, key=lambda m: (m["val_top1"], -m["val_loss"], -m["epoch"]))["epoch"]


def test_frozen_t1_is_unchanged_by_finetuning(tiny_dataset, tmp_path):
    train.pretrain(tiny_config(tiny_dataset, "pretrain.epochs=1"), tmp_path / "pre", QUIET)
    cfg = tiny_config(tiny_dataset, "finetune.t1=frozen")
    cfg.finetune.pretrained = str(tmp_path / "pre")
    train.finetune(cfg, tmp_path / "ft", QUIET)
    pre = load_file(tmp_path / "pre" / "checkpoints" / "best.safetensors")
    ft = load_file(tmp_path / "ft" / "checkpoints" / "last.safetensors")
    t1_keys = [k for k in pre if not k.startswith("reconstruction_head")]
    assert all(torch.equal(pre[k], ft[f"t1.{k}"]) for k in t1_keys)
    assert not torch.equal(pre[t1_keys[0]] * 0, pre[t1_keys[0]])  # weights are not trivially zero


def test_existing_run_dir_is_not_overwritten(tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset, "pretrain.epochs=1")
    train.pretrain(cfg, tmp_path / "pre", QUIET)
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        train.pretrain(cfg, tmp_path / "pre", QUIET)


def test_schedule_warmup_then_cosine():
    cfg = load_config(None, ["finetune.optim.warmup=0.1", "finetune.optim.min_lr=0"]).finetune.optim
    factors = [optim.lr_factor(cfg, i, 100) for i in range(101)]
    assert factors[0] == 0.0 and factors[5] == pytest.approx(0.5) and factors[10] == pytest.approx(1.0)
    assert factors[55] == pytest.approx(0.5) and factors[100] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))


def test_bad_model_settings_fail_cleanly_before_any_run_dir(tiny_dataset, tmp_path):
    with pytest.raises(UserError, match="model.t1_heads: attention width 32 is not divisible by 3 heads"):
        train.pretrain(tiny_config(tiny_dataset, "model.t1_heads=3"), tmp_path / "pre", QUIET)
    assert not (tmp_path / "pre").exists()
    train.pretrain(tiny_config(tiny_dataset, "pretrain.epochs=1"), tmp_path / "pre", QUIET)
    cfg = tiny_config(tiny_dataset, "model.d_model=16")
    cfg.finetune.pretrained = str(tmp_path / "pre")
    with pytest.raises(UserError, match="does not fit model settings"):
        train.finetune(cfg, tmp_path / "ft", QUIET)
    assert not (tmp_path / "ft").exists()
