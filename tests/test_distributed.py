"""DDP on CPU: a 2-process gloo job equals the single-process run with the same global batch."""

import json
import os
import subprocess
import sys

from tests.conftest import TINY

# No dropout: the two runs must see the same function, so their losses can be compared step for step.
EXACT = [*TINY, "model.dropout=0", "model.t2_dropout=0", "model.fusion_dropout=0", "finetune.epochs=3",
         "finetune.batch_size=16", "data.rotate=0.3"]


def cascade(*args, procs=1, extra_env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(extra_env or {})}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs),
                "--master-port", "29533", "-m", "cascade_cli"] if procs > 1 else [sys.executable, "-m", "cascade_cli"]
    proc = subprocess.run([*launcher, *map(str, args)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def losses(run_dir):
    return [json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_gloo_processes_match_one_process(tiny_dataset, tmp_path):
    sets = [part for o in EXACT for part in ("--set", o)]
    cascade("pretrain", "--data", tiny_dataset, *sets, "--set", "pretrain.epochs=1", "--run-dir", tmp_path / "pre",
            "--quiet")
    cascade("finetune", "--pretrained", tmp_path / "pre", *sets, "--run-dir", tmp_path / "one", "--quiet")
    two = cascade("finetune", "--pretrained", tmp_path / "pre", *sets, "--run-dir", tmp_path / "two", procs=2)
    single, double = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(single) == len(double) == 3
    assert all(abs(a - b) < 1e-4 for a, b in zip(single, double)), (single, double)
    # Rank 0 alone logs and writes: one line per epoch, one set of checkpoints.
    assert two.stdout.count("finetune epoch 3/3") == 1
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == [
        "best.safetensors", "last.safetensors", "trainer_state.pt"]


def test_gradient_accumulation_keeps_the_global_batch(tiny_dataset, tmp_path):
    import cascade_cli.training as train
    from cascade_cli.config import load_config
    from cascade_cli.progress import Reporter

    quiet = Reporter(quiet=True)
    cfg = load_config(None, [*EXACT, "pretrain.epochs=1"], base={"data": {"path": str(tiny_dataset)}})
    train.pretrain(cfg, tmp_path / "pre", quiet)
    cfg.finetune.pretrained = str(tmp_path / "pre")
    train.finetune(cfg, tmp_path / "whole", quiet)
    cfg.accumulate = 4
    train.finetune(cfg, tmp_path / "accumulated", quiet)
    assert all(abs(a - b) < 1e-4 for a, b in zip(losses(tmp_path / "whole"), losses(tmp_path / "accumulated")))
