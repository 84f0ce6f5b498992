"""Checkpoints describe themselves, and damaged ones fail with one clean line."""

import subprocess
import sys

import pytest
import torch

from cascade_cli.checkpoint import load_checkpoint, save_checkpoint
from cascade_cli.config import load_config
from cascade_cli.errors import UserError


@pytest.fixture
def checkpoint(tmp_path):
    model = torch.nn.Linear(4, 3)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, load_config(None, ["model.variant=1.1"]), {"kind": "finetune", "epoch": 3})
    return path, model


def test_round_trip_keeps_weights_config_and_meta(checkpoint):
    path, model = checkpoint
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt.state_dict["weight"], model.weight.detach())
    assert ckpt.config.model.variant == "1.1"
    assert ckpt.meta["epoch"] == 3 and ckpt.meta["package_version"]
    assert not list(path.parent.glob(".*tmp*"))  # written through a temp file


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "not a readable safetensors checkpoint"),
    (lambda b: b"\x00" * 8 + b[8:], "not a readable safetensors checkpoint"),
    (lambda b: b"", "not a readable safetensors checkpoint"),
])
def test_damaged_files_are_user_errors(checkpoint, damage, message):
    path, _ = checkpoint
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(UserError, match=message):
        load_checkpoint(path)


def test_foreign_safetensors_and_missing_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(UserError, match="not a cascade checkpoint"):
        load_checkpoint(tmp_path / "other.safetensors")
    with pytest.raises(UserError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_cli_shows_one_line_for_a_truncated_checkpoint(checkpoint, tmp_path):
    path, _ = checkpoint
    path.write_bytes(path.read_bytes()[:100])
    proc = subprocess.run([sys.executable, "-m", "cascade_cli", "evaluate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not a readable safetensors checkpoint" in lines[0]
