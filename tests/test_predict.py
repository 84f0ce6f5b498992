"""`cascade predict`: raw files through the checkpoint's own preprocessing, with parity to evaluation."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import cascade_cli.training as train
from cascade_cli.checkpoint import load_checkpoint
from cascade_cli.cli import app
from cascade_cli.config import load_config
from cascade_cli.data.format import open_dataset
from cascade_cli.data.ntu import prepare_ntu
from cascade_cli.data.pipeline import ClipDataset, collate_clips
from cascade_cli.errors import UserError
from cascade_cli.model import build_classifier, padding_mask
from cascade_cli.predict import predict
from cascade_cli.progress import Reporter
from tests.conftest import TINY, shared_dataset


@pytest.fixture(scope="module")
def model_dir(tiny_dataset, tmp_path_factory):
    """A tiny classifier on the synthetic NTU-25 data, with a 2-person 'both' input to exercise padding."""
    root = tmp_path_factory.mktemp("predict")
    cfg = load_config(None, [*TINY, "pretrain.epochs=1", "finetune.epochs=1", "data.person=both"],
                      base={"data": {"path": str(tiny_dataset)}})
    train.pretrain(cfg, root / "pre", Reporter(quiet=True))
    cfg.finetune.pretrained = str(root / "pre")
    train.finetune(cfg, root / "ft", Reporter(quiet=True))
    return root / "ft"


def reference_logits(run_dir, dataset_dir):
    """What evaluation feeds the model for every clip of a prepared dataset."""
    ckpt = load_checkpoint(run_dir / "checkpoints" / "best.safetensors")
    ds = open_dataset(dataset_dir)
    model = build_classifier(ckpt.config.model, ckpt.meta["num_joints"], ckpt.meta["in_channels"],
                             ckpt.meta["num_classes"])
    model.load_state_dict(ckpt.state_dict)
    model.eval()
    items = ClipDataset(ds, np.arange(ds.num_clips), ckpt.config.data, train=False, seed=0)
    batch = collate_clips([items[i] for i in range(len(items))])
    with torch.no_grad():
        return list(ds.names), model(batch.x, padding_mask(batch.lengths, batch.x.shape[1]))


def test_skeleton_files_predict_like_the_prepared_dataset(model_dir, tmp_path):
    raw = shared_dataset("ntu_skeleton_samples")
    prepare_ntu(raw, tmp_path / "ntu", "ntu60", workers=1)
    names, expected = reference_logits(model_dir, tmp_path / "ntu")
    files = [raw / f"{name}.skeleton" for name in names]
    results = predict(model_dir, files, top_k=3)
    assert [r["input"] for r in results] == [str(f) for f in files]
    got = torch.tensor([r["logits"] for r in results])
    assert torch.allclose(got, expected, atol=1e-5)
    for r in results:
        assert abs(sum(r["probs"]) - 1) < 1e-5 and len(r["top"]) == 3
        assert r["top"][0]["prob"] >= r["top"][1]["prob"] >= r["top"][2]["prob"]
        assert r["top"][0]["label"] == int(np.argmax(r["logits"]))


def test_npy_inputs_batches_and_raw_parity(model_dir, tiny_dataset, tmp_path):
    ds = open_dataset(tiny_dataset)
    one = ds.clip(0)[:, 0]  # (T, J, C), first person
    np.save(tmp_path / "one.npy", one)
    np.save(tmp_path / "batch.npy", np.stack([ds.clip(i)[:40, 0] for i in range(3)]))  # (B, T, J, C)
    single = predict(model_dir, [tmp_path / "one.npy"])
    batch = predict(model_dir, [tmp_path / "batch.npy"])
    assert len(single) == 1 and [r["input"] for r in batch] == [f"{tmp_path / 'batch.npy'}#{i}" for i in range(3)]

    # --raw feeds exactly what the pipeline would have produced: the same logits.
    cfg = load_checkpoint(model_dir / "checkpoints" / "best.safetensors").config
    from cascade_cli.data.pipeline import transform_clip
    bones = np.asarray(ds.layout.bones).reshape(-1, 2)
    padded = np.concatenate([one[:, None], np.zeros_like(one[:, None])], axis=1)  # the 2-person input
    np.save(tmp_path / "model_input.npy", transform_clip(padded, None, cfg.data, bones, None))
    raw = predict(model_dir, [tmp_path / "model_input.npy"], raw=True)
    assert np.allclose(raw[0]["logits"], single[0]["logits"], atol=1e-5)


def test_layout_mismatch_and_bad_inputs_are_clean_errors(model_dir, tmp_path):
    np.save(tmp_path / "coco.npy", np.zeros((30, 17, 2), np.float32))
    with pytest.raises(UserError, match="17 joints x 2 coordinates, but the checkpoint expects layout ntu25"):
        predict(model_dir, [tmp_path / "coco.npy"])
    (tmp_path / "clip.txt").write_text("1 2 3")
    with pytest.raises(UserError, match="unsupported input type '.txt'"):
        predict(model_dir, [tmp_path / "clip.txt"])
    with pytest.raises(UserError, match="no such input file"):
        predict(model_dir, [tmp_path / "missing.npy"])
    np.save(tmp_path / "nan.npy", np.full((5, 25, 3), np.nan, np.float32))
    with pytest.raises(UserError, match="NaN"):
        predict(model_dir, [tmp_path / "nan.npy"])


def test_predict_cli_json(model_dir, tiny_dataset, tmp_path):
    np.save(tmp_path / "one.npy", open_dataset(tiny_dataset).clip(1)[:, 0])
    result = CliRunner().invoke(app, ["predict", str(model_dir), str(tmp_path / "one.npy"), "--json", "-k", "2"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert len(out) == 1 and len(out[0]["top"]) == 2 and len(out[0]["probs"]) == 10
    table = CliRunner().invoke(app, ["predict", str(model_dir), str(tmp_path / "one.npy")])
    assert table.exit_code == 0 and "one.npy" in table.output


def test_evaluating_on_another_dataset_is_refused(model_dir, tmp_path):
    from cascade_cli.data.format import DatasetWriter
    from cascade_cli.evaluate import evaluate
    from cascade_cli.layouts import NTU25

    with DatasetWriter(tmp_path / "other", "other", NTU25, 2, ["a", "b"]) as writer:
        writer.add_clip(np.ones((20, 1, 25, 3), np.float32), 0, "x")
        writer.add_clip(np.ones((20, 1, 25, 3), np.float32), 1, "y")
        writer.set_protocol("xsub", "", [0, 1])
    with pytest.raises(UserError, match="class names differ"):
        evaluate(model_dir, data_path=tmp_path / "other")
