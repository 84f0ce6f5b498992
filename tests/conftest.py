"""Shared fixtures: a tiny synthetic dataset and a tiny model config that trains in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATASETS = Path(os.environ.get("CASCADE_SHARED_DATASETS",
                                      Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))

# A model small enough that a few epochs on ~50 clips take seconds on 2 CPU cores.
TINY = [
    "model.d_model=32", "model.t1_layers=1", "model.t1_heads=2", "model.ffn_dim=64", "model.max_frames=32",
    "data.frames=16", "data.val_fraction=0.2", "data.center_joint=1",
    "pretrain.epochs=2", "pretrain.batch_size=16", "pretrain.optim.lr=1e-3",
    "finetune.epochs=2", "finetune.batch_size=16", "finetune.optim.lr=1e-3",
    "amp=off",  # exact float32 numerics for the equality checks, whatever the CPU
]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    from cascade_cli.data.synthetic import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("data") / "synthetic", clips_per_class=8, seed=0)


def nucla_with_a_broken_file(folder: Path, good: int = 3) -> Path:
    """`good` real N-UCLA files and one truncated JSON (a02_s01_e00_v01.json) in `folder`."""
    folder.mkdir()
    for path in sorted(shared_dataset("nw_ucla", "all_sqe").glob("a01_s01_*.json"))[:good]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "a02_s01_e00_v01.json").write_text('{"file_name": "a02_s01_e00_v01", "skeletons": [[')
    return folder


def shared_dataset(*parts: str) -> Path:
    """A folder of the real shared data, or skip the test saying where it was looked for."""
    path = SHARED_DATASETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set CASCADE_SHARED_DATASETS to its datasets/ folder)")
    return path
