"""finetune.ema: a moving average of the weights is what validation selects and checkpoints hold."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import cascade_cli.training.stages as train
from cascade_cli.data.format import open_dataset
from cascade_cli.inference import load_classifier, score_indices
from tests.test_train import QUIET, interrupt_after, tiny_config


@pytest.fixture(scope="module")
def pretrained(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("ema")
    train.pretrain(tiny_config(tiny_dataset, "pretrain.epochs=1"), root / "pre", QUIET)
    return root / "pre"


def _config(data, pretrained, *extra):
    cfg = tiny_config(data, "finetune.epochs=4", "finetune.ema=0.9", "finetune.keep_last=4", *extra)
    cfg.finetune.pretrained = str(pretrained)
    return cfg


def test_the_average_is_validated_selected_and_saved(tiny_dataset, pretrained, tmp_path):
    train.finetune(_config(tiny_dataset, pretrained), tmp_path / "ft", QUIET)
    ckpt = tmp_path / "ft" / "checkpoints"
    raw, average = load_file(ckpt / "last.safetensors"), load_file(ckpt / "last_ema.safetensors")
    assert raw.keys() == average.keys()
    assert any(not torch.equal(raw[k], average[k]) for k in raw)  # the average is not the last weights
    epoch4 = load_file(ckpt / "epoch-0004.safetensors")
    assert all(torch.equal(epoch4[k], average[k]) for k in average)  # epoch checkpoints hold the average
    rows = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    best = load_classifier(tmp_path / "ft")
    ds = open_dataset(tiny_dataset)
    from cascade_cli.data.splits import run_splits

    val = score_indices(best, ds, run_splits(best.config, ds).val)
    recorded = next(r for r in rows if r["epoch"] == best.meta["epoch"])["val_top1"]
    assert float((val.predictions == val.labels).mean()) == pytest.approx(recorded)  # what validation saw


def test_resuming_with_an_average_is_exact(tiny_dataset, pretrained, tmp_path, monkeypatch):
    cfg = _config(tiny_dataset, pretrained)
    train.finetune(cfg, tmp_path / "straight", QUIET)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            train.finetune(cfg, tmp_path / "resumed", QUIET)
    train.finetune(cfg, tmp_path / "resumed", QUIET, resume=True)
    for name in ("last.safetensors", "last_ema.safetensors", "best.safetensors"):
        a = load_file(tmp_path / "straight" / "checkpoints" / name)
        b = load_file(tmp_path / "resumed" / "checkpoints" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    off = tiny_config(tiny_dataset, "finetune.epochs=4")
    off.finetune.pretrained = str(pretrained)
    train.finetune(off, tmp_path / "off", QUIET)
    assert not (tmp_path / "off" / "checkpoints" / "last_ema.safetensors").exists()
    assert np.isfinite(json.loads((tmp_path / "off" / "metrics.jsonl").read_text().splitlines()[-1])["val_top1"])
