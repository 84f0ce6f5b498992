"""Exit heads (after T1, after every layer; fitted post hoc or trained jointly) and the real cascade:
clips that stay get the full model's predictions, and each leaves where its rule says."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cascade_cli import lifecycle
from cascade_cli.cli import app
from cascade_cli.data.format import open_dataset
from cascade_cli.data.pipeline import ClipDataset, collate_clips
from cascade_cli.exits.fit import fit_exit_heads
from cascade_cli.exits.report import (choose_threshold, early_exit_report, every_place, flops_per_clip, leave_at,
                                      thresholds)
from cascade_cli.inference import load_classifier, score_indices
from cascade_cli.inference.scorer import device_batches
from cascade_cli.errors import UserError
from cascade_cli.inference.cascade import cascade_forward, exit_confidence
from cascade_cli.metrics import expected_calibration_error
from cascade_cli.predict import predict
from cascade_cli.model import padding_mask
from tests.conftest import TINY


@pytest.fixture(scope="module")
def with_exits(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("exits")
    overrides = [*TINY, "pretrain.epochs=2", "finetune.epochs=6", "model.d_model=48", "data.frames=0",
                 "model.max_frames=160"]
    lifecycle.pretrain(root / "pre", data=tiny_dataset, overrides=overrides)
    lifecycle.finetune(root / "ft", pretrained=root / "pre")
    fit_exit_heads(root / "ft", root / "exits.safetensors")
    return root


def test_a_checkpoint_with_exit_heads_scores_like_the_one_without(with_exits, tiny_dataset):
    plain, exits = load_classifier(with_exits / "ft"), load_classifier(with_exits / "exits.safetensors")
    assert not hasattr(plain.model, "exits") and "t1" in exits.model.exits
    ds = open_dataset(tiny_dataset)
    test = ds.split_indices("xsub", "test")
    a, b = score_indices(plain, ds, test), score_indices(exits, ds, test)
    np.testing.assert_array_equal(a.logits, b.logits)  # the main path is untouched by the exit head


def test_the_cascade_keeps_the_full_models_predictions_for_clips_that_stay(with_exits, tiny_dataset):
    classifier = load_classifier(with_exits / "exits.safetensors")
    ds = open_dataset(tiny_dataset)
    test = ds.split_indices("xsub", "test")
    items = ClipDataset(ds, test, classifier.config.data, train=False, seed=0)
    batch = collate_clips([items[i] for i in range(len(items))])  # variable lengths: padding masked
    pad = padding_mask(batch.lengths, batch.x.shape[1])
    with torch.no_grad():
        full = classifier.model(batch.x, pad)
        early = classifier.model.exits["t1"](classifier.model.t1(batch.x, pad), pad)
    confidence = early.softmax(-1).max(-1).values
    threshold = float(confidence.median())  # about half the clips leave
    logits, pooled, where = cascade_forward(classifier.model, batch.x, pad, threshold)
    left = where == 0  # places: t1, final
    assert 0 < left.sum() < len(left) and set(where.tolist()) == {0, 1}
    stay = ~left
    assert torch.equal(logits[stay].argmax(-1), full[stay].argmax(-1))
    torch.testing.assert_close(logits[stay], full[stay], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits[left], early[left])
    assert pooled[left].isnan().all()  # never computed for the clips that left
    torch.testing.assert_close(pooled[stay], classifier.model.embed(batch.x, pad)[stay], atol=1e-5, rtol=1e-5)
    never, _, none_left = cascade_forward(classifier.model, batch.x, pad, 1.01)  # above any probability
    assert (none_left == 1).all()
    torch.testing.assert_close(never, full, atol=1e-5, rtol=1e-5)
    # The fitted exit is far better than chance on the test clips.
    assert (early.argmax(-1) == batch.labels).float().mean() > 3 / len(ds.class_names)


def test_the_threshold_is_the_most_exits_within_the_allowed_drop():
    # Four clips; the exit head is right on the two it is most confident about.
    early = np.log(np.array([[0.95, 0.05], [0.9, 0.1], [0.6, 0.4], [0.55, 0.45]]))
    full = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels, cost = np.array([0, 0, 1, 1]), np.array([1.0, 2.0])  # full model: 3/4 right (wrong on clip 0)
    # Clips 0-2 leaving: 0 and 1 right, 2 wrong, 3 right by the full model: 3/4, no drop.
    chosen = choose_threshold(np.stack([early, full]), labels, cost, max_drop=0.0)
    assert chosen["exit_share"] == 0.75 and chosen["gflops"] == 1.25
    everyone = choose_threshold(np.stack([early, full]), labels, cost, max_drop=50)
    assert everyone["exit_share"] == 1.0 and everyone["top1"] == 0.5
    # A drop the exits cannot meet leaves no clip early: the full model, threshold above 1.
    one = np.stack([np.log(np.array([[0.9, 0.1]])), np.array([[0.0, 1.0]])])
    strict = choose_threshold(one, np.array([1]), cost, max_drop=0.0)
    assert strict["exit_share"] == 0.0 and strict["threshold"] > 1.0


def test_expected_calibration_error():
    probs = np.array([[0.9, 0.1]] * 10)
    assert expected_calibration_error(probs, np.array([0] * 9 + [1])) == pytest.approx(0.0)
    assert expected_calibration_error(probs, np.array([1] * 10)) == pytest.approx(0.9)


def test_the_early_exit_report_chooses_on_validation_and_measures_both_ways(with_exits, tiny_dataset, tmp_path):
    classifier = load_classifier(with_exits / "exits.safetensors")
    ds = open_dataset(tiny_dataset)
    report = early_exit_report(classifier, ds, max_drop=5, out=tmp_path / "ee.json")
    t = report["test"]
    assert report["chosen_on"] == "val" and report["val"]["top1"] >= report["val"]["full_top1"] - 0.05 - 1e-9
    assert json.loads((tmp_path / "ee.json").read_text())["threshold"] == report["threshold"]
    assert (tmp_path / "ee.png").read_bytes()[:4] == b"\x89PNG"
    plain = score_indices(load_classifier(with_exits / "ft"), ds, ds.split_indices("xsub", "test"))
    assert t["top1_full"] == pytest.approx(float((plain.logits.argmax(1) == plain.labels).mean()))
    share = t["exit_share"]["t1"]
    assert share + t["exit_share"]["final"] == pytest.approx(1.0)
    assert 0 < t["gflops_per_clip_early_exit"] < t["gflops_per_clip_full"] or share == 0
    assert t["seconds_full"] > 0 and t["seconds_early_exit"] > 0 and 0 <= t["ece"]["t1"] <= 1
    assert t["batch1_latency_ms_full"]["p95"] >= t["batch1_latency_ms_full"]["mean"] * 0.5 > 0
    per_class = t["exit_share_per_class"]["t1"]
    test_labels = ds.labels[ds.split_indices("xsub", "test")]
    counts = {ds.class_names[c]: int((test_labels == c).sum()) for c in np.unique(test_labels)}
    assert set(per_class) == set(counts)  # the overall share is the clip-weighted mean of the per-class ones
    assert sum(per_class[k] * counts[k] for k in counts) / sum(counts.values()) == pytest.approx(share)


def test_exits_from_the_command_line(with_exits, tmp_path):
    runner = CliRunner()
    fitted = runner.invoke(app, ["exits", "fit", str(with_exits / "ft"), "--out", str(tmp_path / "e.safetensors"),
                                 "--quiet"])
    assert fitted.exit_code == 0, fitted.output
    evaluated = runner.invoke(app, ["evaluate", str(tmp_path / "e.safetensors"), "--early-exit", "--quiet"])
    assert evaluated.exit_code == 0, evaluated.output
    assert evaluated.output.startswith("top1 ") and "exits" in evaluated.output
    assert (tmp_path / "e.early_exit.json").exists()
    plain = runner.invoke(app, ["evaluate", str(with_exits / "ft"), "--early-exit"])
    assert plain.exit_code != 0 and "no exit head" in plain.output and "Traceback" not in plain.output


def test_the_full_paths_flop_count_is_the_analytic_one(with_exits):
    # Eval-mode encoder layers take a fused path the FLOP counter cannot see, and on CPU it does not
    # know the attention kernel: the count must still be every matrix product of the model.
    classifier = load_classifier(with_exits / "exits.safetensors")
    m, T = classifier.config.model, 20
    assert (m.variant, m.fusion, m.head, m.t2_layers) == ("1.0", "plain", "linear", 0)  # the count below
    d, f, (J, C), K = m.d_model, m.ffn_dim, classifier.input_shape, len(classifier.class_names)
    layer = 2 * T * d * 3 * d + 2 * T * d * d + 2 * 2 * T * T * d + 2 * 2 * T * d * f  # QKV, out, QK^T and AV, FFN
    t1 = 2 * T * J * C * d + m.t1_layers * layer  # joint embedding, encoder
    fusion = 2 * T * d * d * 4 + 2 * 2 * T * T * d  # Q, K, V, out projections; QK^T and AV
    analytic = t1 + m.t1_layers * layer + fusion + 2 * d * K  # T2 has T1's depth; the linear head
    flops = flops_per_clip(classifier, T)
    exit_head = 2 * d * K
    assert flops["full"] == pytest.approx(analytic, rel=0.01)
    assert flops["cost"]["t1"] == pytest.approx(t1 + exit_head, rel=0.01)  # leaving after T1
    assert flops["cost"]["final"] == pytest.approx(analytic + exit_head, rel=0.01)  # staying: the exit head paid too


def test_predict_through_the_cascade(with_exits, tiny_dataset, tmp_path):
    ds = open_dataset(tiny_dataset)
    files = []
    for i in ds.split_indices("xsub", "test")[:8]:
        files.append(tmp_path / f"clip{i}.npy")
        np.save(files[-1], ds.clip(int(i))[:, 0])
    checkpoint = with_exits / "exits.safetensors"
    plain = predict(checkpoint, files)
    never = predict(checkpoint, files, exit_threshold=2.0)
    assert [r["exit"] for r in never] == ["final"] * len(files)
    np.testing.assert_allclose([r["logits"] for r in never], [r["logits"] for r in plain], atol=1e-5)
    always = predict(checkpoint, files, exit_threshold=0.0)
    assert [r["exit"] for r in always] == ["t1"] * len(files)
    confidence = [r["top"][0]["prob"] for r in always]
    middle = predict(checkpoint, files, exit_threshold=float(np.median(confidence)))
    assert {r["exit"] for r in middle} == {"t1", "final"}
    for r, p, a in zip(middle, plain, always):  # each clip gets the exit head's or the full model's answer
        np.testing.assert_allclose(r["logits"], (a if r["exit"] == "t1" else p)["logits"], atol=1e-5)
    cli = CliRunner().invoke(app, ["predict", str(checkpoint), *map(str, files), "--early-exit", "0", "--json"])
    assert cli.exit_code == 0 and json.loads(cli.output)[0]["exit"] == "t1"
    refused = CliRunner().invoke(app, ["predict", str(with_exits / "ft"), str(files[0]), "--early-exit", "0.9"])
    assert refused.exit_code != 0 and "no exit head" in refused.output


def test_exit_confidence_rules():
    sure, unsure = [20.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]
    two_way, spread = [3.0, 3.0, -9.0, -9.0], [4.0, 2.0, 2.0, 2.0]  # top probability 0.5 and 0.71
    logits = torch.tensor([sure, unsure, two_way, spread])
    top = exit_confidence(logits, "max_softmax")
    torch.testing.assert_close(top[:2], torch.tensor([1.0, 0.25]), atol=1e-6, rtol=0)
    entropy = exit_confidence(logits, "entropy")
    torch.testing.assert_close(entropy[:2], torch.tensor([1.0, 0.0]), atol=1e-6, rtol=0)
    # By entropy, two likely classes are more certain than one ahead of three others: the rules differ.
    assert top[2] < top[3] and entropy[2] > entropy[3]
    with pytest.raises(UserError, match="exit rule 'margin'"):
        exit_confidence(logits, "margin")


def test_the_entropy_rule_end_to_end(with_exits, tiny_dataset):
    classifier = load_classifier(with_exits / "exits.safetensors")
    report = early_exit_report(classifier, open_dataset(tiny_dataset), max_drop=5, rule="entropy")
    assert report["rule"] == "entropy" and report["val"]["top1"] >= report["val"]["full_top1"] - 0.05 - 1e-9
    cli = CliRunner().invoke(app, ["evaluate", str(with_exits / "exits.safetensors"), "--early-exit",
                                   "--rule", "entropy", "--out", str(with_exits / "entropy.json")])
    assert cli.exit_code == 0 and "entropy >=" in cli.output.replace("\n", " ")


def test_a_compute_budget_chooses_the_best_top1_within_it(with_exits, tiny_dataset):
    early = np.log(np.array([[0.95, 0.05], [0.9, 0.1], [0.6, 0.4], [0.55, 0.45]]))
    full = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels, cost, logits = np.array([0, 0, 1, 1]), np.array([1.0, 2.0]), np.stack([early, full])
    # At least half the clips must leave: the best top-1 is clips 0 and 1 leaving (4/4).
    half = choose_threshold(logits, labels, cost, max_gflops=1.5)
    assert half["exit_share"] == 0.5 and half["top1"] == 1.0
    assert choose_threshold(logits, labels, cost, max_gflops=1.0)["exit_share"] == 1.0
    classifier, ds = load_classifier(with_exits / "exits.safetensors"), open_dataset(tiny_dataset)
    report = early_exit_report(classifier, ds, budget=0.8)
    assert report["val"]["gflops"] <= 0.8 * report["test"]["gflops_per_clip_full"] + 1e-12
    assert report["budget"] == 0.8 and "max_drop" not in report
    with pytest.raises(UserError, match="--budget 0.01: between"):
        early_exit_report(classifier, ds, budget=0.01)  # cheaper than T1 alone


def test_fitting_refuses_an_output_that_is_not_a_checkpoint_file(with_exits, tmp_path):
    runner = CliRunner()
    folder = runner.invoke(app, ["exits", "fit", str(with_exits / "ft"), "--out", str(tmp_path)])
    assert folder.exit_code != 0 and "a folder; give the checkpoint file to write" in folder.output
    wrong = runner.invoke(app, ["exits", "fit", str(with_exits / "ft"), "--out", str(tmp_path / "e.pt")])
    assert wrong.exit_code != 0 and "must end in .safetensors" in wrong.output
    assert "Traceback" not in folder.output + wrong.output and list(tmp_path.iterdir()) == []


def test_the_threshold_never_sees_test_labels(with_exits, tiny_dataset, monkeypatch):
    from cascade_cli.data.splits import run_splits
    from cascade_cli.exits import report as report_module

    classifier, ds = load_classifier(with_exits / "exits.safetensors"), open_dataset(tiny_dataset)
    seen = []
    real = report_module.choose_threshold
    monkeypatch.setattr(report_module, "choose_threshold",
                        lambda logits, labels, *a, **k: seen.append(labels) or real(logits, labels, *a, **k))
    first = early_exit_report(classifier, ds, max_drop=5)
    splits = run_splits(classifier.config, ds)
    assert len(seen) == 1 and np.array_equal(seen[0], ds.labels[splits.val])
    # The one choice made took the validation clips, which share none with test.
    assert not set(splits.test) & set(splits.val) and first["threshold"] == first["val"]["threshold"]


def test_patience_on_a_hand_made_sequence():
    # Four exits and the main head; each row the class every exit predicts for one clip.
    predicted = np.array([[0, 0, 1, 1], [0, 1, 0, 1], [1, 0, 0, 0], [2, 2, 2, 2]])
    logits = np.stack([np.eye(3)[predicted[:, k]] * 5 for k in range(4)] + [np.zeros((4, 3))])  # (5, 4, 3)
    final = 4
    assert leave_at(logits, "patience", 1).tolist() == [0, 0, 0, 0]  # one exit agreeing with itself
    assert leave_at(logits, "patience", 2).tolist() == [1, final, 2, 1]
    assert leave_at(logits, "patience", 3).tolist() == [final, final, 3, 2]
    assert leave_at(logits, "patience", 4).tolist() == [final, final, final, 3]
    assert leave_at(logits, "patience", 5).tolist() == [final] * 4  # more than the exits: the full model
    with pytest.raises(UserError, match="whole number"):
        leave_at(logits, "patience", 1.5)


@pytest.fixture(scope="module")
def joint(tiny_dataset, tmp_path_factory):
    """Exits after every encoder layer (two of T1, two of T2), trained jointly with the classifier."""
    root = tmp_path_factory.mktemp("joint")
    lifecycle.pretrain(root / "pre", data=tiny_dataset, overrides=[*TINY, "model.t1_layers=2"])
    lifecycle.finetune(root / "ft", pretrained=root / "pre",
                       overrides=["finetune.epochs=4", "finetune.exit_loss_weight=0.5", "finetune.exits=layers"])
    return root / "ft"


def test_joint_training_learns_an_exit_after_every_layer(joint, tiny_dataset):
    classifier = load_classifier(joint)
    model = classifier.model
    assert model.exits.order(model) == ["t1_layer1", "t1", "t2_layer1", "t2_layer2"]
    header, *rows = (joint / "metrics.csv").read_text().splitlines()
    assert "train_exit_loss" in header.split(",") and len(rows) == 4
    ds = open_dataset(tiny_dataset)
    logits, labels = every_place(classifier, device_batches(classifier, ds, ds.split_indices("xsub", "test"), 16))
    assert logits.shape[0] == 5 and not np.isnan(logits).any()
    # The main path of a model with exits is its plain forward, exits or not.
    batch = device_batches(classifier, ds, ds.split_indices("xsub", "test")[:8], 8)[0]
    with torch.no_grad():
        torch.testing.assert_close(model(batch[0], batch[2]), model(batch[0], batch[2], with_exits=True)[0])
    exit_loss = [float(row.split(",")[header.split(",").index("train_exit_loss")]) for row in rows]
    assert exit_loss[-1] < exit_loss[0] - 0.05  # the exits learn from the joint loss


@pytest.fixture(scope="module")
def layer_exits(with_exits):
    """Exits after every layer of a classifier with one-layer T1 and T2, fitted post hoc."""
    return fit_exit_heads(with_exits / "ft", with_exits / "layers.safetensors", places="layers")


@pytest.mark.parametrize("exits, rule", [("joint", "max_softmax"), ("joint", "entropy"), ("layer_exits", "patience"),
                                         ("layer_exits", "max_softmax")])
def test_the_cascade_leaves_where_the_rule_says_and_stays_exact(exits, rule, tiny_dataset, request):
    classifier, ds = load_classifier(request.getfixturevalue(exits)), open_dataset(tiny_dataset)
    batches = device_batches(classifier, ds, ds.split_indices("xsub", "test"), 64)
    logits, labels = every_place(classifier, batches)
    threshold = 2 if rule == "patience" else float(np.median(thresholds(logits, rule)))
    expected = leave_at(logits, rule, threshold)  # decided offline, every clip run to the end
    assert len(set(expected.tolist())) >= 2  # clips leave at different places
    got, where = [], []
    for x, _, pad, _ in batches:
        z, _, at = cascade_forward(classifier.model, x, pad, threshold, rule)
        got.append(z)
        where.append(at)
    got, where = torch.cat(got).numpy(), torch.cat(where).numpy()
    np.testing.assert_array_equal(where, expected)
    # Every clip's logits are those of the place it left at: the full model's for the ones that stayed.
    np.testing.assert_allclose(got, logits[expected, np.arange(len(labels))], atol=1e-5, rtol=1e-5)


def test_exits_after_every_layer_fitted_post_hoc(with_exits, layer_exits, tiny_dataset, tmp_path):
    classifier, plain = load_classifier(layer_exits), load_classifier(with_exits / "ft")
    assert classifier.model.exits.order(classifier.model) == ["t1", "t2_layer1"]  # T1 and T2 of one layer each
    ds = open_dataset(tiny_dataset)
    test = ds.split_indices("xsub", "test")
    np.testing.assert_array_equal(score_indices(classifier, ds, test).logits, score_indices(plain, ds, test).logits)
    cli = CliRunner().invoke(app, ["exits", "fit", str(with_exits / "ft"), "--exits", "everywhere",
                                   "--out", str(tmp_path / "x.safetensors")])
    assert cli.exit_code != 0 and "everywhere" in cli.output and "Traceback" not in cli.output


def test_anomaly_decisions_through_the_cascade(with_exits, tiny_dataset, tmp_path):
    from cascade_cli.anomaly.alerts import score, tune
    from cascade_cli.anomaly.detector import fit_detector

    detector = fit_detector(with_exits / "exits.safetensors", tmp_path / "detector", abnormal="wave")
    ds = open_dataset(tiny_dataset)
    files = []
    for i in ds.split_indices("xsub", "test")[:6]:
        files.append(tmp_path / f"clip{i}.npy")
        np.save(files[-1], ds.clip(int(i))[:, 0])
    tune(detector, rule="or2")  # reads knn and mahalanobis: pooled features, which early clips never compute
    with pytest.raises(UserError, match="reads knn, mahalanobis.*--early-exit"):
        score(detector, files, exit_threshold=0.0)
    tune(detector, rule="single:energy")
    early, full = score(detector, files, exit_threshold=0.0), score(detector, files, exit_threshold=2.0)
    assert {r["exit"] for r in early} == {"t1"} and {r["exit"] for r in full} == {"final"}
    assert all(r["statistics"]["knn"] is None and r["statistics"]["energy"] is not None for r in early)
    plain = score(detector, files)
    assert [r["decision"] for r in full] == [r["decision"] for r in plain]  # no exit taken: the same decisions
    cli = CliRunner().invoke(app, ["anomaly", "score", str(tmp_path / "detector"), *map(str, files), "--early-exit",
                                   "0", "--json"])
    assert cli.exit_code == 0 and json.loads(cli.output)[0]["exit"] == "t1"
