import csv
from dataclasses import replace

import numpy as np
import pytest
import torch

import cascade_cli.training as train
from cascade_cli.checkpoint import load_checkpoint, save_checkpoint
from cascade_cli.config import load_config
from cascade_cli.data.format import DatasetWriter, open_dataset
from cascade_cli.data.pipeline import model_input_shape, sample_frames
from cascade_cli.errors import UserError
from cascade_cli.data.pipeline import resize, temporal_view
from cascade_cli.data.registry import two_person_classes
from cascade_cli.evaluate import aggregate_reports, evaluate
from cascade_cli.inference import load_classifier, score_indices
from cascade_cli.metrics import person_breakdown
from cascade_cli.runtime import to_device
from cascade_cli.training.loop import make_loader
from cascade_cli.model import build_classifier
from cascade_cli.progress import Reporter
from tests.conftest import TINY

QUIET = Reporter(quiet=True)


def train_tiny(data, run_dir, *extra):
    cfg = load_config(None, [*TINY, "pretrain.epochs=1", *extra], base={"data": {"path": str(data)}})
    train.pretrain(cfg, run_dir / "pre", QUIET)
    cfg.finetune.pretrained = str(run_dir / "pre")
    train.finetune(cfg, run_dir / "ft", QUIET)
    return run_dir / "ft"


def load_model(run):
    ckpt = load_checkpoint(run / "checkpoints" / "best.safetensors")
    ds = open_dataset(ckpt.config.data.path)
    model = build_classifier(ckpt.config.model, *model_input_shape(ds, ckpt.config.data), ds.num_classes)
    model.load_state_dict(ckpt.state_dict)
    return ckpt, ds, model.eval()


def scores(report):
    with np.load(report["scores_path"], allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset, tmp_path_factory):
    return train_tiny(tiny_dataset, tmp_path_factory.mktemp("eval"))


def test_breakdown_agrees_with_the_saved_scores(tiny_run, tmp_path):
    report = evaluate(tiny_run, out=tmp_path / "eval_test.json", breakdown=True, save_scores=True)
    assert report["confusion_csv"] == str(tmp_path / "eval_test_confusion.csv")
    assert report["scores_path"] == str(tmp_path / "eval_test_scores.npz")
    assert "person_breakdown" not in report  # synthetic is not NTU
    saved = scores(report)
    logits, labels, predictions = saved["logits"], saved["labels"], saved["predictions"]
    n, classes = len(labels), len(saved["class_names"])
    assert logits.dtype == np.float32 and logits.shape == (n, classes) and n == report["clips"]
    assert saved["names"].dtype.kind == "U" and len(saved["names"]) == n
    assert np.array_equal(logits.argmax(1), predictions)
    assert report["top1"] == pytest.approx(np.mean(predictions == labels))

    with open(report["confusion_csv"]) as fh:
        header, *rows = list(csv.reader(fh))
    assert header[1:] == saved["class_names"].tolist() == [row[0] for row in rows]
    confusion = np.array([[int(v) for v in row[1:]] for row in rows])
    assert confusion.sum() == n
    assert np.array_equal(confusion, np.bincount(labels * classes + predictions, minlength=classes ** 2)
                          .reshape(classes, classes))
    for c, row in enumerate(report["per_class"]):
        assert row["support"] == confusion[c].sum() == (labels == c).sum()
        assert row["correct"] == confusion[c, c]
        assert row["accuracy"] == pytest.approx(confusion[c, c] / confusion[c].sum())
        mistakes = np.delete(confusion[c], c)
        assert row["confused_count"] == mistakes.max()
        if mistakes.max():
            assert confusion[c, header[1:].index(row["confused_with"])] == mistakes.max()
    assert report["macro"] == pytest.approx(np.mean([row["accuracy"] for row in report["per_class"]]))

    png = (tmp_path / "eval_test_confusion.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes left no temp files


def test_results_do_not_depend_on_batch_size_or_order(tiny_run, tmp_path):
    runs = [evaluate(tiny_run, out=tmp_path / f"b{b}.json", batch_size=b, save_scores=True) for b in (1, 3, 64)]
    first = scores(runs[0])
    for report in runs[1:]:
        other = scores(report)
        np.testing.assert_allclose(other["logits"], first["logits"], atol=1e-5)
        assert np.array_equal(other["predictions"], first["predictions"])
        assert [report[k] for k in ("top1", "top5", "macro")] == [runs[0][k] for k in ("top1", "top5", "macro")]
    _, ds, _ = load_model(tiny_run)
    test = ds.split_indices("xsub", "test")
    backwards = score_indices(load_classifier(tiny_run, "cpu"), ds, test[::-1], batch_size=7, reporter=QUIET)
    np.testing.assert_allclose(backwards.logits[::-1], first["logits"], atol=1e-5)


@pytest.mark.parametrize("sampling", ["resize", "indices"])
def test_one_view_is_the_pipelines_evaluation_sampling(sampling):
    cfg = load_config(None, [f"data.sampling={sampling}", "data.frames=16", "data.eval_crop=0.8"]).data
    for length in (1, 5, 16, 57, 300):
        x = np.random.default_rng(length).normal(size=(length, 2, 3)).astype(np.float32)
        # The classic evaluation sampling, written out: the evenly spaced grid, or the centre crop
        # keeping eval_crop of the frames, linearly resized.
        bias = int((1 - cfg.eval_crop) * length / 2)
        classic = (x[np.linspace(0, length - 1, cfg.frames).astype(np.int64)] if sampling == "indices"
                   else resize(x[bias:length - bias], cfg.frames))
        assert np.array_equal(temporal_view(x, cfg, 0, 1), classic)
        assert np.array_equal(sample_frames(x, cfg, None), classic)
        views = [temporal_view(x, cfg, k, 3) for k in range(3)]
        assert all(v.shape == (16, 2, 3) for v in views)
        if length >= 57:
            assert not np.array_equal(views[0], views[2])


def test_multi_view_testing(tiny_run, tmp_path):
    ckpt, ds, model = load_model(tiny_run)
    loader = make_loader(ds, ds.split_indices("xsub", "test"), ckpt.config, train=False, batch_size=16)
    with torch.no_grad():
        plain = torch.cat([model(x, pad) for x, _, pad, _ in (to_device(b, torch.device("cpu"))
                                                              for b in loader)]).numpy()
    one = evaluate(tiny_run, out=tmp_path / "k1.json", save_scores=True)
    np.testing.assert_allclose(scores(one)["logits"], plain, atol=1e-5)
    three = evaluate(tiny_run, out=tmp_path / "k3.json", clips=3, save_scores=True)
    assert three["views"] == 3 and three["clips"] == one["clips"] and 0 <= three["top1"] <= three["top5"] <= 1
    assert not np.allclose(scores(three)["logits"], plain)  # the views really differ

    with pytest.raises(UserError, match="use 1 or more"):
        evaluate(tiny_run, out=tmp_path / "k0.json", clips=0)
    variable = replace(ckpt.config, data=replace(ckpt.config.data, frames=0))
    save_checkpoint(tmp_path / "variable.safetensors", model, variable, ckpt.meta)
    with pytest.raises(UserError, match="only one temporal view"):
        evaluate(tmp_path / "variable.safetensors", clips=2)


def test_two_person_classes_of_ntu_only():
    assert two_person_classes("ntu60", 60) == list(range(49, 60))
    ntu120 = two_person_classes("ntu120", 120)
    assert len(ntu120) == 26 and {49, 59, 105, 119} <= set(ntu120) and 60 not in ntu120
    assert two_person_classes("custom", 60) is None and two_person_classes("ntu60", 10) is None


def test_person_breakdown_by_hand():
    confusion = np.zeros((60, 60), dtype=np.int64)
    confusion[0, 0], confusion[0, 3] = 8, 2  # single-person class 0: 8 of 10
    confusion[1, 0] = 2  # single-person class 1: 0 of 2
    confusion[49, 49] = 4  # two-person class 49: 4 of 4
    confusion[50, 2] = 1  # two-person class 50: 0 of 1
    result = person_breakdown(confusion, range(49, 60))
    assert result["single_person"] == {"classes": 49, "samples": 12, "macro": 0.4, "weighted": pytest.approx(8 / 12)}
    assert result["two_person"] == {"classes": 11, "samples": 5, "macro": 0.5, "weighted": 0.8}
    assert result["overall"] == {"classes": 60, "samples": 17, "macro": 0.45, "weighted": pytest.approx(12 / 17)}


def test_ntu_report_has_the_person_breakdown(tiny_dataset, tmp_path):
    source = open_dataset(tiny_dataset)
    with DatasetWriter(tmp_path / "ntu", "ntu60", source.layout, source.persons,
                       [f"A{i + 1}" for i in range(60)]) as writer:
        for i in range(source.num_clips):
            writer.add_clip(source.clip(i), (i * 7) % 60, str(source.names[i]))
        writer.set_protocol("xsub", "as the source", np.isin(np.arange(source.num_clips),
                                                             source.split_indices("xsub", "test")))
    run = train_tiny(tmp_path / "ntu", tmp_path, "finetune.epochs=1", "finetune.select=last")
    report = evaluate(run, breakdown=True, save_scores=True)
    saved = scores(report)
    confusion = np.zeros((60, 60), dtype=np.int64)
    np.add.at(confusion, (saved["labels"], saved["predictions"]), 1)
    assert report["person_breakdown"] == person_breakdown(confusion, range(49, 60))
    assert report["person_breakdown"]["two_person"]["samples"] == (saved["labels"] >= 49).sum() > 0
    assert report["person_breakdown"]["overall"]["weighted"] == pytest.approx(report["top1"])
    assert report["person_breakdown"]["overall"]["macro"] == pytest.approx(report["macro"])
    assert (run / "eval_test_confusion.png").stat().st_size > 20_000


def test_aggregate_reports_over_seeds():
    def fake(seed, top1, two):
        group = {"classes": 11, "samples": 5, "macro": two, "weighted": two}
        return {"checkpoint": f"runs/s{seed}", "dataset": "ntu60", "protocol": "xsub", "split": "test", "views": 1,
                "top1": top1, "top5": 0.9, "macro": top1 - 0.1,
                "person_breakdown": {"two_person": group, "single_person": group, "overall": group}}

    summary = aggregate_reports([fake(1, 0.8, 0.5), fake(2, 0.9, 0.7)])
    assert summary["runs"] == 2 and summary["checkpoints"] == ["runs/s1", "runs/s2"]
    assert summary["top1"] == {"mean": pytest.approx(0.85), "std": pytest.approx(np.sqrt(0.005))}
    assert summary["top5"] == {"mean": pytest.approx(0.9), "std": 0.0}
    assert summary["person_breakdown"]["two_person"]["macro"] == {"mean": pytest.approx(0.6),
                                                                   "std": pytest.approx(np.sqrt(0.02))}
    assert aggregate_reports([fake(1, 0.8, 0.5)])["top1"] == {"mean": 0.8, "std": 0.0}
    with pytest.raises(UserError, match="different split"):
        aggregate_reports([fake(1, 0.8, 0.5), {**fake(2, 0.9, 0.7), "split": "val"}])
