"""The presets must survive a normal (non-editable) install: the CLI's demo, convert, ablate and
--preset all read them, and a source checkout would hide a wheel that forgot them.

The wheel is built offline from a copy of the project, so the build leaves nothing in the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cascade_cli.config import list_presets

REPO = Path(__file__).resolve().parents[1]

# Building and installing with pip takes a few seconds, unlike the rest of this file's neighbours.
pytestmark = pytest.mark.slow


def _pip(*args: str, cwd: Path) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    result = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"pip {args[0]} failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """pip builds a local folder in place (build/, *.egg-info), hence the copy."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "cascade_cli", source / "cascade_cli", ignore=shutil.ignore_patterns("__pycache__"))
    out = root / "wheels"
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), str(source), cwd=root)
    (built,) = out.glob("cascade_cli-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("installed")
    _pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel), cwd=target)
    return target


def test_wheel_carries_every_preset(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    presets = list_presets()
    assert len(presets) > 10
    missing = [p for p in presets if f"cascade_cli/presets/{p}.yaml" not in names]
    assert not missing, f"presets left out of the wheel (see package-data in pyproject.toml): {missing}"
    from cascade_cli.layouts import LAYOUTS

    missing = [name for name in LAYOUTS if f"cascade_cli/layouts/{name}.yaml" not in names]
    assert not missing, f"built-in layouts left out of the wheel: {missing}"


def test_installed_copy_lists_and_loads_presets(installed, tmp_path):
    # Only the installed copy on the path, run away from the checkout, so the source tree cannot stand in.
    env = {**os.environ, "PYTHONPATH": str(installed), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    where = run("-c", "import cascade_cli; print(cascade_cli.__file__)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).resolve().is_relative_to(installed.resolve()), where.stdout

    listing = run("-m", "cascade_cli", "presets", "list")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    for name in ("demo", "penn_action-cpu", "table1/penn_action-1.0", "table9/penn_action-1.0-mlp"):
        assert name in listing.stdout, f"{name} missing from `cascade presets list`:\n{listing.stdout}"

    loaded = run("-c", "from cascade_cli.config import load_config; "
                       "print(load_config('table1/penn_action-1.0').model.d_model)")
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "256"
