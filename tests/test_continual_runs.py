"""Class-incremental runs end to end on synthetic data: honest buffers, forgetting, resume."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import cascade_cli.continual.learner as learner
from cascade_cli.cli import app
from cascade_cli.config import load_config
from cascade_cli.continual.learner import run_continual
from cascade_cli.progress import Reporter
from tests.conftest import TINY

QUIET = Reporter(quiet=True)
SETTINGS = [*TINY, "continual.tasks=5", "continual.epochs=4", "continual.buffer=20", "continual.batch_size=8",
            "continual.optim.lr=0.02", "continual.probe_epochs=1", "model.dropout=0"]


def config(data, *extra):
    return load_config(None, [*SETTINGS, *extra], base={"data": {"path": str(data)}})


@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("continual")
    return {m: run_continual(config(tiny_dataset, f"continual.method={m}"), root / m, QUIET)
            for m in ("ft", "er")}, root


def test_rehearsal_forgets_less_than_finetuning(runs):
    results, _ = runs
    ft, er = results["ft"], results["er"]
    assert len(ft["accuracy"]) == 5 and ft["faa"] == pytest.approx(np.mean(ft["accuracy"][-1]))
    assert er["forgetting"] < ft["forgetting"] and er["faa"] > ft["faa"]
    assert er["buffer_clips"] == 20 and ft["buffer_bytes"] == 0


@pytest.mark.parametrize("method", ["er", "derpp", "charon"])
def test_the_buffer_never_holds_a_later_tasks_clips(tiny_dataset, tmp_path, monkeypatch, method):
    from cascade_cli.continual.buffer import ReservoirBuffer

    seen = []
    real_add = ReservoirBuffer.add

    def add(self, x, labels, task, logits=None):
        seen.append((task, set(labels.tolist())))
        return real_add(self, x, labels, task, logits)

    monkeypatch.setattr(ReservoirBuffer, "add", add)
    cfg = config(tiny_dataset, f"continual.method={method}")
    tasks = learner.plan_tasks(cfg, __import__("cascade_cli.data.format", fromlist=["x"]).open_dataset(tiny_dataset))
    run_continual(cfg, tmp_path / method, QUIET)
    assert seen and all(labels <= set(tasks[task].classes) for task, labels in seen)
    assert [task for task, _ in seen] == sorted(task for task, _ in seen)  # never a clip of a task before its turn


def test_a_killed_run_resumes_to_the_same_numbers(tiny_dataset, tmp_path, monkeypatch):
    cfg = config(tiny_dataset, "continual.method=derpp")
    straight = run_continual(cfg, tmp_path / "straight", QUIET)
    calls = {"n": 0}
    real_epoch = learner.Learner._epoch

    def dying_epoch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # task 2, epoch 3
            raise KeyboardInterrupt
        return real_epoch(self, *args, **kwargs)

    monkeypatch.setattr(learner.Learner, "_epoch", dying_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_continual(cfg, tmp_path / "resumed", QUIET)
    monkeypatch.setattr(learner.Learner, "_epoch", real_epoch)
    resumed = run_continual(cfg, tmp_path / "resumed", QUIET, resume=True)
    assert resumed["accuracy"] == straight["accuracy"]
    assert resumed["faa"] == straight["faa"]


def test_the_command_and_its_report(runs, tiny_dataset, tmp_path):
    results, root = runs
    result = CliRunner().invoke(app, ["continual", "--data", str(tiny_dataset), "--method", "derpp", "--buffer", "20",
                                      *[p for s in SETTINGS for p in ("--set", s)], "--run-dir", str(tmp_path / "d"),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    assert "derpp: FAA" in result.output
    saved = json.loads((tmp_path / "d" / "continual.json").read_text())
    assert saved["method"] == "derpp" and len(saved["accuracy"]) == 5
    assert (tmp_path / "d" / "accuracy.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "d" / "accuracy.csv").read_text().startswith("after task,task 1,")
    report = CliRunner().invoke(app, ["continual", "report", str(root / "ft"), str(root / "er"), str(tmp_path / "d")])
    assert report.exit_code == 0, report.output
    assert "not comparable" in report.output and "derpp" in report.output


def test_pretraining_sees_the_first_task_only(tiny_dataset, tmp_path, monkeypatch):
    import cascade_cli.training.objectives as objectives

    labels_seen = set()
    real = objectives.PretrainObjective.loss

    def loss(self, model, batch, device, generator):
        labels_seen.update(batch.labels.tolist())
        return real(self, model, batch, device, generator)

    monkeypatch.setattr(objectives.PretrainObjective, "loss", loss)
    cfg = config(tiny_dataset, "continual.method=er", "continual.pretrain=first_task", "pretrain.epochs=2",
                 "pretrain.batch_size=8")
    result = run_continual(cfg, tmp_path / "pre", QUIET)
    first_task = learner.plan_tasks(cfg, __import__("cascade_cli.data.format", fromlist=["x"]).open_dataset(tiny_dataset))[0]
    assert labels_seen and labels_seen <= set(first_task.classes)
    assert len(result["accuracy"]) == 5
