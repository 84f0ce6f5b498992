"""`cascade evaluate --ensemble`: runs fused with weights chosen on validation, never on test."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cascade_cli import lifecycle
from cascade_cli.cli import app
from cascade_cli.ensemble import ensemble_report, fusion_weights
from cascade_cli.errors import UserError
from cascade_cli.evaluate import evaluate
from tests.conftest import TINY


@pytest.fixture(scope="module")
def streams(tiny_dataset, tmp_path_factory):
    """A joint and a bone-motion run of the same data, validation split and seed."""
    root = tmp_path_factory.mktemp("streams")
    for stream in ("joints", "bone_motion"):
        lifecycle.pretrain(root / stream / "pre", data=tiny_dataset, overrides=[*TINY, f"data.representation={stream}"])
        lifecycle.finetune(root / stream / "ft", pretrained=root / stream / "pre")
    return root


def test_fusion_weights_are_the_best_on_the_clips_given():
    labels = np.array([0, 1, 1, 0])
    a = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.8, 0.2]])  # right on 0, 2, 3
    b = np.array([[0.4, 0.6], [0.1, 0.9], [0.3, 0.7], [0.7, 0.3]])  # right on 1, 2, 3
    weights, top1 = fusion_weights([a, b], labels)
    assert top1 == 1.0 and weights == (0.5, 0.5)  # together right on all four; equal weights preferred
    assert fusion_weights([a], labels) == ((1.0,), 0.75)


def test_an_ensemble_of_one_run_is_the_run(streams, tmp_path):
    alone = ensemble_report([streams / "joints" / "ft"], out=tmp_path / "one.json")
    plain = evaluate(streams / "joints" / "ft", out=tmp_path / "plain.json")
    assert alone["ensemble"][0]["weight"] == 1.0
    assert (alone["top1"], alone["top5"], alone["macro"]) == (plain["top1"], plain["top5"], plain["macro"])


def test_two_streams_fused_with_weights_chosen_on_validation(streams, monkeypatch):
    from cascade_cli import ensemble

    seen = []
    real = ensemble.fusion_weights
    monkeypatch.setattr(ensemble, "fusion_weights", lambda probs, labels: seen.append(labels) or real(probs, labels))
    report = ensemble_report([streams / "joints" / "ft", streams / "bone_motion" / "ft"])
    assert len(seen) == 1 and len(seen[0]) < report["clips"]  # one choice, on the validation clips
    assert [r["representation"] for r in report["ensemble"]] == ["joints", "bone_motion"]
    assert sum(r["weight"] for r in report["ensemble"]) == pytest.approx(1.0)
    written = json.loads((streams / "joints" / "ft" / "eval_test_ensemble.json").read_text())
    assert written["top1"] == report["top1"] and written["weights_chosen_on"] == "val"
    cli = CliRunner().invoke(app, ["evaluate", str(streams / "joints" / "ft"), str(streams / "bone_motion" / "ft"),
                                   "--ensemble", "--quiet"])
    assert cli.exit_code == 0 and cli.output.startswith(f"top1 {100 * report['top1']:.2f}")


def test_runs_that_do_not_share_their_clips_are_refused(streams, tiny_dataset, tmp_path):
    lifecycle.finetune(tmp_path / "other_val", pretrained=streams / "joints" / "pre",
                       overrides=["data.val_fraction=0.5"])
    with pytest.raises(UserError, match="validates on other clips"):
        ensemble_report([streams / "joints" / "ft", tmp_path / "other_val"])
    lifecycle.finetune(tmp_path / "subset", pretrained=streams / "joints" / "pre",
                       overrides=["data.exclude_classes=wave"])
    cli = CliRunner().invoke(app, ["evaluate", str(streams / "joints" / "ft"), str(tmp_path / "subset"), "--ensemble"])
    assert cli.exit_code != 0 and "validates on other clips" in cli.output and "Traceback" not in cli.output


def test_runs_of_another_dataset_protocol_or_class_order_are_refused_in_one_line():
    from cascade_cli.ensemble import _check_runs
    from cascade_cli.inference import Scores

    same = Scores(np.zeros((2, 2)), np.zeros((2, 3)), np.array([0, 1]), ["a", "b"])
    meta = {"dataset": "penn_action", "protocol": "official", "class_names": ["x", "y"]}
    for key, value, what in (("dataset", "n_ucla", "dataset"), ("protocol", "cross_view", "protocol"),
                             ("class_names", ["y", "x"], "class order")):
        with pytest.raises(UserError, match=f"run2 has another {what} than run1") as error:
            _check_runs(["run1", "run2"], [meta, {**meta, key: value}], [same, same], [same, same])
        assert "\n" not in str(error.value)
