"""The lifecycle's one home: config resolution shared by library and CLI, runs that cannot drift,
amendments that are recorded, one writer per directory, and the chain of stages."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import yaml

from cascade_cli import lifecycle
from cascade_cli.config import load_config
from cascade_cli.errors import UserError
from cascade_cli.locking import directory_lock
from cascade_cli.progress import Reporter
from cascade_cli.training.optim import lr_factor
from tests.conftest import TINY

QUIET = Reporter(quiet=True)


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def pretrained(tiny_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("lifecycle") / "pre"
    lifecycle.pretrain(run, data=tiny_dataset, overrides=[*TINY, "pretrain.epochs=1", "model.d_model=48"])
    return run


def test_library_finetune_inherits_the_pretraining_config(pretrained, tmp_path):
    # Only the finetuning settings are given: the model settings come from the pretraining run.
    best = lifecycle.finetune(tmp_path / "ft", pretrained=pretrained, overrides=["finetune.epochs=1"])
    assert best.is_file()
    saved = yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text())
    assert saved["model"]["d_model"] == 48 and saved["data"]["frames"] == 16
    assert saved["finetune"]["pretrained"] == str(pretrained) and saved["finetune"]["epochs"] == 1
    resolved = lifecycle.stage_config("finetune", pretrained=pretrained, overrides=["finetune.epochs=1"])
    assert yaml.safe_load(yaml.safe_dump(saved)) == json.loads(json.dumps(__import__("dataclasses").asdict(resolved)))


def test_resume_with_another_config_is_refused_and_amend_records_it(pretrained, tmp_path):
    run = tmp_path / "ft"
    common = ["finetune.optim.schedule=cosine", "finetune.optim.schedule_unit=step", "finetune.optim.warmup=0",
              "finetune.optim.lr=1e-3"]
    lifecycle.finetune(run, pretrained=pretrained, overrides=[*common, "finetune.epochs=2"])
    before = (run / "config.yaml").read_text()
    with pytest.raises(UserError, match=r"resuming would change finetune\.epochs \(2 -> 4\).*--amend"):
        lifecycle.finetune(run, resume=True, overrides=["finetune.epochs=4"])
    assert (run / "config.yaml").read_text() == before  # nothing changed on refusal
    with pytest.raises(UserError, match=r"finetune\.optim\.name cannot change in a resumed run"):
        lifecycle.finetune(run, resume=True, amend=True, overrides=["finetune.optim.name=sgd"])
    with pytest.raises(UserError, match="--amend changes a run being resumed"):
        lifecycle.finetune(tmp_path / "other", pretrained=pretrained, amend=True)

    lifecycle.finetune(run, resume=True, amend=True, overrides=["finetune.epochs=4"])
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["finetune"]["epochs"] == 4
    (entry,) = saved["history"]
    assert entry["after_epoch"] == 2 and entry["changes"] == {"finetune.epochs": [2, 4]}
    records = metrics(run)
    event = next(r for r in records if r.get("event") == "amend")
    assert [r["epoch"] for r in records if "event" not in r] == [1, 2, 3, 4]
    assert event["epoch"] == 2 and event["changes"] == {"finetune.epochs": [2, 4]}

    # The run continues at its step on the schedule of 4 epochs: from epoch 3 on, exactly the
    # learning rates a run planned with 4 epochs from the start has (not a restart from zero).
    straight = tmp_path / "straight"
    lifecycle.finetune(straight, pretrained=pretrained, overrides=[*common, "finetune.epochs=4"])
    planned = [r["lr"] for r in metrics(straight)]
    amended = [r["lr"] for r in records if "event" not in r]
    assert amended[2:] == pytest.approx(planned[2:], rel=1e-9)
    assert amended[1] < planned[1]  # the 2-epoch plan had decayed further by then
    cfg = load_config(None, common).finetune.optim
    steps = event["schedule_steps"]
    assert event["lr_after"] == pytest.approx(1e-3 * lr_factor(cfg, steps // 2, steps))
    assert event["lr_after"] > event["lr_before"] == 0.0  # the 2-epoch cosine had ended at min_lr
    # The config.yaml with its history still works as a preset (the history is not configuration).
    assert load_config(str(run / "config.yaml")).finetune.epochs == 4


def test_a_second_writer_is_refused_and_a_killed_holder_never_blocks(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from cascade_cli.locking import directory_lock\n"
        f"with directory_lock({str(run)!r}, 'run directory'):\n"
        "    print('locked', flush=True); sys.stdin.read()")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = [sys.executable, "-m", "cascade_cli", "pretrain", "--data", str(tiny_dataset), "--run-dir", str(run),
                *[part for o in (*TINY, "pretrain.epochs=1") for part in ("--set", o)], "--quiet"]
        second = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert second.returncode == 2, second.stdout + second.stderr
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "another process is writing this run directory" in lines[0]
        assert not (run / "config.yaml").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The killed process's lock file is still there, and blocks nobody.
    assert (run / ".lock").exists()
    third = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert third.returncode == 0, third.stdout + third.stderr
    assert (run / "checkpoints" / "best.safetensors").is_file()


def test_studies_and_prepared_datasets_are_locked_too(tiny_dataset, tmp_path):
    from cascade_cli.ablate import run_study
    from cascade_cli.data.nucla import prepare_nucla
    from tests.conftest import shared_dataset

    with directory_lock(tmp_path / "study", "study directory"):
        with pytest.raises(UserError, match="another process is writing this study directory"):
            run_study("decoder", tmp_path / "study", dataset=tiny_dataset)
    raw = shared_dataset("nw_ucla", "all_sqe")
    with directory_lock(tmp_path / "nucla.partial", "dataset being prepared"):
        with pytest.raises(UserError, match="another process is writing this dataset being prepared"):
            prepare_nucla(raw, tmp_path / "nucla", workers=1)
    assert not (tmp_path / "nucla").exists()


def test_the_chain_skips_finished_stages_and_refuses_changed_ones(tiny_dataset, tmp_path):
    cfg = load_config(None, [*TINY, "pretrain.epochs=1", "finetune.epochs=1"], base={"data": {"path": str(tiny_dataset)}})
    first = lifecycle.run_stages(cfg, tmp_path / "pre", tmp_path / "ft", QUIET)
    assert 0 <= first.report["top1"] <= 1 and set(first.seconds) == {"pretrain", "finetune", "evaluate"}
    logged = (tmp_path / "ft" / "metrics.jsonl").read_text()
    again = lifecycle.run_stages(cfg, tmp_path / "pre", tmp_path / "ft", QUIET)
    assert (tmp_path / "ft" / "metrics.jsonl").read_text() == logged  # nothing trained again
    assert again.report["top1"] == first.report["top1"]
    assert again.seconds["pretrain"] == first.seconds["pretrain"]  # as recorded when it finished
    cfg.finetune.epochs = 2
    with pytest.raises(UserError, match=r"finetune\.epochs \(1 -> 2\).*use another output directory"):
        lifecycle.run_stages(cfg, tmp_path / "pre", tmp_path / "ft", QUIET)


def test_inference_never_imports_the_trainer():
    code = ("import sys, cascade_cli.evaluate, cascade_cli.predict, cascade_cli.anomaly.alerts, cascade_cli.export, "
            "cascade_cli.inference\n"
            "print([m for m in sys.modules if m.startswith(('cascade_cli.training', 'cascade_cli.lifecycle'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    # ...while the check itself can see the trainer when it is imported.
    code = code.replace("cascade_cli.inference\n", "cascade_cli.inference, cascade_cli.lifecycle\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "cascade_cli.training.loop" in out


def test_mean_and_std_follow_one_convention(tmp_path):
    from cascade_cli.ablate import collect_results
    from cascade_cli.evaluate import aggregate_reports
    from cascade_cli.metrics import mean_std

    top1 = [0.80, 0.84, 0.83]
    assert mean_std(top1) == (pytest.approx(np.mean(top1)), pytest.approx(np.std(top1, ddof=1)))
    assert mean_std([0.5]) == (0.5, 0.0)
    reports = [{"checkpoint": f"r{i}", "dataset": "d", "protocol": "p", "split": "test", "views": 1,
                "top1": t, "top5": 1.0, "macro": t} for i, t in enumerate(top1)]
    evaluated = aggregate_reports(reports)["top1"]
    study = tmp_path / "study"
    (study).mkdir()
    (study / "study.json").write_text(json.dumps({"study": "decoder", "budget": "quick", "dataset": "nowhere",
                                                 "seeds": 3, "base_seed": 42, "overrides": []}))
    for s, t in enumerate(top1):
        arm = study / "arms" / "penn_action-1.0-linear" / f"seed-{s}"
        arm.mkdir(parents=True)
        (arm / "result.json").write_text(json.dumps({"top1": t, "note": "", "wall_s": 1.0}))
    row = collect_results(study)[0]
    assert row["top1_std"] == pytest.approx(100 * evaluated["std"]) == pytest.approx(100 * np.std(top1, ddof=1))
    assert row["top1"] == pytest.approx(100 * evaluated["mean"])
