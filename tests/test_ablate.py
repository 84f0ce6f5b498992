"""`cascade ablate` / `cascade report`: each study builds the intended arms, runs resumably, and reports."""

import json

import pytest
import torch
from typer.testing import CliRunner

import cascade_cli.ablate as ablate
from cascade_cli.cli import app
from cascade_cli.config import load_config
from cascade_cli.model import build_classifier, build_t1, set_t1_trainable

FAST = ("pretrain.epochs=1", "finetune.epochs=2", "data.frames=16", "model.d_model=32")


def arms(study):
    return {arm.split("-")[-1]: load_config(arm) for arm in ablate.study_arms(study)}


def test_decoder_study_builds_the_three_decoders():
    keys = {}
    for name, cfg in arms("decoder").items():
        t1 = build_t1(cfg.model, 13, 2, with_decoder=True)
        keys[name] = sorted({k.split(".")[1] for k in t1.state_dict() if k.startswith("reconstruction_head.")})
    assert keys == {"linear": ["bias", "weight"], "mlp": ["0", "2"], "mlp_residual": ["fc1", "fc2", "proj_residual"]}


def test_freezing_study_freezes_exactly_the_intended_parameters():
    trainable = {}
    for name, cfg in arms("freezing").items():
        with torch.device("meta"):
            model = build_classifier(cfg.model, 13, 2, 15)
        set_t1_trainable(model, cfg.finetune.t1, cfg.finetune.t1_trainable_layers)
        trainable[name] = {k for k, p in model.named_parameters() if p.requires_grad and k.startswith("t1.")}
        assert all(p.requires_grad for k, p in model.named_parameters() if not k.startswith("t1."))
    last = cfg.model.t1_layers - 1
    assert trainable["full"] == {k for k, _ in model.named_parameters() if k.startswith("t1.")}
    assert trainable["frozen"] == set()
    assert trainable["last_layer"] and all(k.startswith(f"t1.transformer_encoder.layers.{last}.")
                                           for k in trainable["last_layer"])


def test_masking_and_representation_studies_set_their_strategy():
    assert {n: c.pretrain.mask for n, c in arms("masking").items()} == {
        "joint_slots": "joint_slots", "frames": "frames", "none": "none"}
    assert sorted(c.data.representation for c in arms("representation").values()) == [
        "bone_concat", "bone_param", "bone_sub", "joints"]
    epochs = sorted(c.pretrain.epochs for c in arms("pretrain-epochs").values())
    assert epochs == [1, 100, 200]


def test_quick_budget_keeps_the_arm_difference(tiny_dataset):
    configs = [ablate.arm_config(a, "pretrain-epochs", "quick", tiny_dataset, 42)[0]
               for a in ablate.study_arms("pretrain-epochs")]
    assert [c.pretrain.epochs for c in configs] == [1, 5, 10]
    cfg, note = ablate.arm_config("table1/ntu60_xsub-1.2", "variant", "quick", tiny_dataset, 42)
    assert cfg.model.d_model % 25 == 0 and cfg.model.d_model <= 100  # 1.2 paper form: d/J per joint
    assert "quick budget" in note and "dataset synthetic" in note
    build_classifier(cfg.model, 25, 3, 10)  # builds


def test_ablate_runs_resumes_and_reports(tiny_dataset, tmp_path, monkeypatch):
    runner = CliRunner()
    study = tmp_path / "decoder"
    args = ["ablate", "decoder", "--dataset", str(tiny_dataset), "--out", str(study), "--quiet"]
    args += [part for o in FAST for part in ("--set", o)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads((study / "results.json").read_text())["rows"]
    assert [r["arm"] for r in rows] == ["linear", "mlp", "mlp_residual"]
    assert all(r["status"] == "ok" and 0 <= r["top1"] <= 100 for r in rows)
    assert [r["paper_top1"] for r in rows] == [94.66, 92.51, 91.20]
    assert all(not r["comparable"] and "quick budget" in r["note"] for r in rows)
    assert "(n/c)" in result.output and (study / "results.md").read_text().count("\n| ") == 4
    assert (study / "results.csv").read_text().splitlines()[0].startswith("arm,")
    # The three decoders need three pretraining runs (the decoder is part of pretraining).
    assert len(list((study / "pretrain").iterdir())) == 3

    # Delete one arm's result: only that arm runs again.
    (study / "arms" / "penn_action-1.0-mlp" / "seed-0" / "result.json").unlink()
    ran = []
    real = ablate._run_arm
    monkeypatch.setattr(ablate, "_run_arm", lambda cfg, arm_dir, *a: ran.append(arm_dir.parent.name) or real(cfg, arm_dir, *a))
    assert runner.invoke(app, args).exit_code == 0
    assert ran == ["penn_action-1.0-mlp"]

    # A failing arm is reported and the others still finish.
    def broken(cfg, arm_dir, *a):
        raise RuntimeError("out of memory")
    monkeypatch.setattr(ablate, "_run_arm", broken)
    (study / "arms" / "penn_action-1.0-linear" / "seed-0" / "result.json").unlink()
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "failed: RuntimeError: out of memory" in (study / "results.md").read_text()

    report = runner.invoke(app, ["report", str(study), "--out", str(tmp_path / "rep")])
    assert report.exit_code == 0, report.output
    assert (tmp_path / "rep" / "report.png").stat().st_size > 5000
    assert "| mlp_residual |" in (tmp_path / "rep" / "report.md").read_text()


def test_frozen_arms_share_one_pretraining(tiny_dataset, tmp_path):
    rows = ablate.run_study("freezing", tmp_path / "freezing", dataset=tiny_dataset, overrides=FAST)
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert len(list((tmp_path / "freezing" / "pretrain").iterdir())) == 1


def test_unknown_study_and_missing_default_dataset(tmp_path, monkeypatch):
    from cascade_cli.errors import UserError

    with pytest.raises(UserError, match="unknown study 'depth'"):
        ablate.run_study("depth", tmp_path / "s")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="data/penn_action"):
        ablate.run_study("decoder", tmp_path / "s")


def test_the_streams_study_trains_each_stream_and_fuses_them(tiny_dataset, tmp_path):
    rows = ablate.run_study("streams", tmp_path / "streams", dataset=tiny_dataset, overrides=FAST)
    assert [r["arm"] for r in rows] == ["joints", "bone_sub", "joint_motion", "bone_motion", "fused"]
    assert all(r["status"] == "ok" and r["top1"] is not None for r in rows)
    fused = json.loads((tmp_path / "streams" / "arms" / "fused" / "seed-0" / "result.json").read_text())
    assert sum(fused["weights"].values()) == pytest.approx(1.0) and set(fused["weights"]) == {
        "joints", "bone_sub", "joint_motion", "bone_motion"}
    # The fused row stands beside the paper's joint-only number; the study's pretraining is per stream.
    assert rows[-1]["paper_top1"] == rows[0]["paper_top1"] == 94.66 and rows[1]["paper_top1"] is None
    assert len(list((tmp_path / "streams" / "pretrain").iterdir())) == 4
    assert "fused" in (tmp_path / "streams" / "results.md").read_text()
