"""`cascade anomaly`: statistics checked against direct numpy, searches against known optima, the
NTU-AD sets against the real NTU metadata, and an honest end-to-end run on synthetic data."""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from cascade_cli import lifecycle
from cascade_cli.anomaly.policy import (GRID_2, Policy, candidates, decision_metrics, parse_costs, search_direct,
                                        search_reward_model)
from cascade_cli.anomaly.sets import ABNORMAL_SETS, named_set, parse_classes
from cascade_cli.anomaly.statistics import NormalBank, clip_statistics
from cascade_cli.cli import app
from cascade_cli.data.format import open_dataset
from cascade_cli.errors import UserError
from tests.conftest import TINY, shared_dataset
from tests.test_anomaly_llm import stub  # noqa: F401 - the local OpenAI-compatible stub server, as a fixture


# ----------------------------------------------------------------------------------------------
# Statistics


def test_every_statistic_against_a_direct_numpy_computation():
    rng = np.random.default_rng(0)
    d, classes = 12, 4
    bank_raw, bank_labels = rng.normal(size=(60, d)), rng.integers(0, classes, 60)
    bank_raw[:, 0] += 2.0 * bank_labels  # classes apart, as embeddings of a trained model are
    logits, raw = rng.normal(size=(7, 9)) * 3, rng.normal(size=(7, d))
    bank = NormalBank.fit(bank_raw, bank_labels, k=5)
    got = clip_statistics(logits, raw, bank)

    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    b, z = unit(bank_raw), unit(raw)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    q = np.clip(p, 1e-8, 1)
    np.testing.assert_allclose(got["entropy"], -(q * np.log(q)).sum(1), rtol=1e-6)
    np.testing.assert_allclose(got["lowconf"], 1 - p.max(1), rtol=1e-6)
    distances = np.linalg.norm(z[:, None] - b[None], axis=2)
    np.testing.assert_allclose(got["knn"], np.sort(distances, axis=1)[:, :5].mean(1), rtol=1e-4)
    precision = np.linalg.pinv(np.cov(b, rowvar=False) + 1e-5 * np.eye(d))
    centred = z - b.mean(0)
    np.testing.assert_allclose(got["mahalanobis"], np.sqrt(np.einsum("nd,de,ne->n", centred, precision, centred)),
                               rtol=1e-5)
    np.testing.assert_allclose(got["energy"], -np.log(np.exp(logits).sum(1)), rtol=1e-6)
    np.testing.assert_allclose(got["neg_max_logit"], -logits.max(1))
    means = {c: b[bank_labels == c].mean(0) for c in range(classes)}
    scatter = sum((b[bank_labels == c] - m).T @ (b[bank_labels == c] - m) for c, m in means.items()) / len(b)
    shared = np.linalg.pinv(scatter + 1e-5 * np.eye(d))
    per_class = np.stack([np.einsum("nd,de,ne->n", z - m, shared, z - m) for m in means.values()], axis=1)
    np.testing.assert_allclose(got["class_mahalanobis"], np.sqrt(per_class.min(1)), rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Policies


def test_direct_search_finds_the_cost_optimum_of_its_candidates():
    rng = np.random.default_rng(1)
    abnormal = np.r_[np.zeros(80, bool), np.ones(20, bool)]
    stats = {"knn": np.r_[rng.uniform(0.0, 1.0, 80), rng.uniform(0.8, 1.6, 20)],
             "mahalanobis": rng.uniform(0, 10, 100)}  # uninformative
    costs = parse_costs("tp=5,fp=-3,fn=-10,tn=0")
    best = search_direct("or2", stats, abnormal, costs)
    # By hand: every candidate's mean cost, the lowest first in grid order.
    cost = [(decision_metrics((stats["knn"] >= t["knn"]) | (stats["mahalanobis"] >= t["mahalanobis"]),
                              abnormal, costs)["mean_cost"], i, t) for i, t in enumerate(candidates("or2", stats))]
    assert best == min(cost, key=lambda c: (c[0], c[1]))[2]
    assert set(best) == {"knn", "mahalanobis"} and best["knn"] in np.quantile(stats["knn"], GRID_2)
    # A rule the search can make perfect, it makes perfect.
    separable = {"knn": np.r_[np.linspace(0, 1, 80), np.linspace(2, 3, 20)]}
    perfect = search_direct("single:knn", separable, abnormal, costs)
    assert decision_metrics(separable["knn"] >= perfect["knn"], abnormal, costs)["confusion"] == {
        "tp": 20, "fp": 0, "fn": 0, "tn": 80}


def test_reward_model_search_reproduces_the_authors_method():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(2)
    abnormal = np.r_[np.zeros(150, bool), np.ones(50, bool)]
    stats = {"knn": np.r_[rng.uniform(0, 1, 150), rng.uniform(0.7, 2, 50)], "mahalanobis": rng.uniform(0, 5, 200)}
    behaviour = rng.random(200) < 0.5
    costs = parse_costs("tp=5,fp=-3,fn=-10,tn=0")
    found = search_reward_model("or2", stats, abnormal, costs, behaviour)
    assert found in candidates("or2", stats)
    direct = search_direct("or2", stats, abnormal, costs)
    mean_cost = lambda t: decision_metrics(Policy("p", t).decide(stats, np.zeros(200, int)), abnormal,  # noqa: E731
                                          costs)["mean_cost"]
    assert mean_cost(direct) <= mean_cost(found)  # the exact search is never worse on its own data


def test_policy_text_says_the_rule_applied():
    policy = Policy("tuned", {"knn": 1.0935, "mahalanobis": 74.1626})
    assert policy.text() == "ALERT if knn >= 1.0935 OR mahalanobis >= 74.1626; otherwise LOG."
    stats = {"knn": np.array([1.2, 0.5, 0.5]), "mahalanobis": np.array([10.0, 80.0, 10.0])}
    assert policy.decide(stats, np.zeros(3, int)).tolist() == [True, True, False]  # OR, not BOTH
    assert policy.fired({"knn": 1.2, "mahalanobis": 80.0}) == ["knn", "mahalanobis"]
    rule = Policy("class-rule", {}, class_rule=(1,))
    assert rule.text(["walk", "fall"]) == "ALERT if the predicted action is one of: fall; otherwise LOG."
    assert Policy.from_dict(policy.to_dict()) == policy


@pytest.mark.parametrize("text, message", [("tp=5,fp=-3,fn=-10", "missing tn"), ("tp=5,fp=x,fn=-10,tn=0", "fp='x'"),
                                           ("tp=5,tp=1,fp=-3,fn=-10,tn=0", "each once"), ("up=1", "'up' is not")])
def test_costs_that_do_not_parse_are_one_line(text, message):
    with pytest.raises(UserError, match=message):
        parse_costs(text)


# ----------------------------------------------------------------------------------------------
# NTU-AD against the real NTU metadata (reference anomaly_agent.md §1)


def test_ntu_ad_sets_against_the_metadata_counts():
    from cascade_cli.data.ntu import TRAIN_SUBJECTS
    from cascade_cli.data.registry import NTU60

    folder = shared_dataset("ntu_metadata", "ntu60", "statistics")
    labels = np.loadtxt(folder / "label.txt", dtype=np.int64) - 1
    performer = np.loadtxt(folder / "performer.txt", dtype=np.int64)
    train = np.isin(performer, TRAIN_SUBJECTS["ntu60"])
    counts = {}
    for name in ABNORMAL_SETS:
        abnormal = np.isin(labels, named_set(name, list(NTU60.class_names)))
        counts[name] = ((abnormal & train).sum(), train.sum(), (abnormal & ~train).sum(), (~train).sum(),
                        (~abnormal & train).sum())
    assert counts["ntu-ad"] == (8039, 40091, 3307, 16487, 32052)
    assert counts["ntu-ad-official"] == (8034, 40091, 3305, 16487, 32057)
    names = list(NTU60.class_names)
    intended = {names[c] for c in ABNORMAL_SETS["ntu-ad"]}
    assert {"falling", "staggering", "point finger at the other person", "touch other person's pocket"} <= intended
    assert {"walking towards each other", "walking apart from each other"} <= {names[c] for c in ABNORMAL_SETS["ntu-ad-official"]}


def test_abnormal_classes_are_checked():
    names = ["walk", "run", "fall"]
    assert parse_classes("fall, 0", names) == [0, 2]
    with pytest.raises(UserError, match=r"'jump' is not a class of this dataset; its classes are walk, run, fall"):
        parse_classes("fall,jump", names)
    with pytest.raises(UserError, match="NTU-AD sets are NTU RGB\\+D 60 classes"):
        named_set("ntu-ad", names)


# ----------------------------------------------------------------------------------------------
# End to end on synthetic data: held-out classes are the unknown actions


@pytest.fixture(scope="module")
def open_set(tiny_dataset, tmp_path_factory):
    """A classifier trained without two classes, and a detector fitted on it."""
    root = tmp_path_factory.mktemp("anomaly")
    overrides = [*TINY, "pretrain.epochs=3", "finetune.epochs=8", "model.d_model=48",
                 "data.exclude_classes=wave,squat", "data.val_fraction=0.25"]
    lifecycle.pretrain(root / "pre", data=tiny_dataset, overrides=overrides)
    lifecycle.finetune(root / "ft", pretrained=root / "pre")
    result = CliRunner().invoke(app, ["anomaly", "fit", str(root / "ft"), "--out", str(root / "detector"), "-q"])
    assert result.exit_code == 0, result.output
    return root


def test_held_out_classes_are_found_and_test_is_never_seen_before_evaluation(open_set, tiny_dataset, monkeypatch):
    import cascade_cli.anomaly.alerts as alerts

    detector, ds = open_set / "detector", open_dataset(tiny_dataset)
    manifest = __import__("yaml").safe_load((detector / "detector.yaml").read_text())
    held_out = [ds.class_names.index(n) for n in ("wave", "squat")]
    assert manifest["abnormal"] == sorted(held_out) == manifest["unknown_classes"]
    clips = load_file(str(detector / "clips.safetensors"))
    test = set(ds.split_indices("xsub", "test").tolist())
    bank, validation = set(clips["bank"].tolist()), set(clips["validation"].tolist())
    assert not bank & validation and not (bank | validation) & test
    assert not set(ds.labels[list(bank)].tolist()) & set(held_out)
    assert set(ds.labels[list(validation)].tolist()) & set(held_out)  # the tuning data has unknown actions

    scored = []
    real = alerts.score_indices
    monkeypatch.setattr(alerts, "score_indices", lambda c, d, idx, **kw: scored.append(set(idx)) or real(c, d, idx, **kw))
    tuned = CliRunner().invoke(app, ["anomaly", "tune", str(detector), "--rule", "or2"])
    assert tuned.exit_code == 0, tuned.output
    assert scored == []  # tuning reads the stored validation statistics only
    policy = __import__("yaml").safe_load((detector / "policy.yaml").read_text())
    assert policy["policy_text"].startswith("ALERT if knn >= ") and " OR mahalanobis >= " in policy["policy_text"]
    evaluated = CliRunner().invoke(app, ["anomaly", "evaluate", str(detector)])
    assert evaluated.exit_code == 0, evaluated.output
    assert scored == [test]
    report = json.loads((detector / "evaluation_test.json").read_text())
    assert report["abnormal"] == sum(int(ds.labels[i]) in held_out for i in test)
    assert max(report["auroc"]["knn"], report["auroc"]["mahalanobis"]) > 0.7  # clearly above chance (0.5)
    assert set(report["policies"]) == {"tuned", "fixed-0.90", "random", "always-log", "always-alert", "class-rule"}
    assert report["policies"]["always-alert"]["recall"] == 1.0
    for name in ("roc_test.png", "histograms_test.png"):
        assert (detector / name).read_bytes().startswith(b"\x89PNG")


def test_score_raw_clips_like_predict(open_set, tiny_dataset, tmp_path):
    CliRunner().invoke(app, ["anomaly", "tune", str(open_set / "detector")])
    ds = open_dataset(tiny_dataset)
    np.save(tmp_path / "clip.npy", ds.clip(0)[:, 0])
    result = CliRunner().invoke(app, ["anomaly", "score", str(open_set / "detector"), str(tmp_path / "clip.npy"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    (clip,) = json.loads(result.output)
    assert clip["decision"] in ("LOG", "ALERT") and set(clip["statistics"]) >= {"knn", "mahalanobis", "energy"}
    assert (clip["decision"] == "ALERT") == bool(clip["fired"])
    from cascade_cli.predict import predict

    (predicted,) = predict(open_set / "ft", [tmp_path / "clip.npy"], top_k=3)
    assert [t["class"] for t in clip["top"]] == [t["class"] for t in predicted["top"]]


def test_bad_detector_inputs_are_one_line_and_write_nothing(open_set, tmp_path):
    runner = CliRunner()
    fit = lambda *extra: runner.invoke(app, ["anomaly", "fit", str(open_set / "ft"), "--out", str(tmp_path / "d"),  # noqa: E731
                                             *extra])
    cases = [(fit("--abnormal", "fly"), "'fly' is not a class of this dataset; its classes are"),
             (fit("--k", "100000"), "fewer than k=100000"),
             (fit("--abnormal", ",".join(map(str, range(10)))), "every class is abnormal"),
             (runner.invoke(app, ["anomaly", "tune", str(open_set / "detector"), "--costs", "tp=1"]), "missing"),
             (runner.invoke(app, ["anomaly", "tune", str(open_set / "detector"), "--rule", "and2"]), "--rule 'and2'")]
    for result, message in cases:
        assert result.exit_code == 2 and message in result.output, result.output
        assert len([line for line in result.output.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "d").exists()
    # A detector refuses a checkpoint that changed since it was fitted.
    import shutil

    shutil.copytree(open_set / "ft", tmp_path / "ft")
    runner.invoke(app, ["anomaly", "fit", str(tmp_path / "ft"), "--out", str(tmp_path / "d2"), "-q"])
    runner.invoke(app, ["anomaly", "tune", str(tmp_path / "d2")])
    from cascade_cli.checkpoint import load_checkpoint, save_checkpoint
    from cascade_cli.inference import load_classifier

    best = tmp_path / "ft" / "checkpoints" / "best.safetensors"
    saved = load_checkpoint(best)
    save_checkpoint(best, load_classifier(best).model, saved.config, {**saved.meta, "epoch": -1})  # other bytes
    changed = runner.invoke(app, ["anomaly", "evaluate", str(tmp_path / "d2")])
    assert changed.exit_code == 2 and "not the checkpoint this detector was fitted on" in changed.output


def test_score_with_a_language_model_on_a_local_stub(open_set, tiny_dataset, tmp_path, stub):
    from tests.test_anomaly_llm import chat, verdict

    CliRunner().invoke(app, ["anomaly", "tune", str(open_set / "detector")])
    np.save(tmp_path / "clip.npy", open_dataset(tiny_dataset).clip(0)[:, 0])
    args = ["anomaly", "score", str(open_set / "detector"), str(tmp_path / "clip.npy"), "--json",
            "--llm-url", stub.url, "--llm-model", "stub-model"]
    stub.answers = [chat(verdict("ALERT", "knn is far above its threshold"))]
    decided = CliRunner().invoke(app, [*args, "--llm-decides"])
    assert decided.exit_code == 0, decided.output
    (clip,) = json.loads(decided.output)
    assert clip["decision"] == "ALERT" and clip["rationale"] == "knn is far above its threshold"
    assert not clip["llm_fell_back"]
    prompt = json.dumps(stub.requests[-1]["body"])
    assert "knn" in prompt and "ALERT if knn >= " in prompt  # the statistics and the policy, no embedding
    stub.answers = [chat("not json at all")]
    fallen = CliRunner().invoke(app, [*args, "--llm-decides"])
    assert fallen.exit_code == 0, fallen.output
    assert json.loads(fallen.output.split("\nwarning")[0])[0]["decision"] == "LOG"
    assert "1 of 1 language-model replies were unusable" in fallen.output
