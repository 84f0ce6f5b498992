"""What a new user hit on small, custom and broken inputs: each a clear line, nothing half-written."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cascade_cli import lifecycle
from cascade_cli.cli import app
from cascade_cli.data.format import DatasetWriter, open_dataset
from cascade_cli.errors import UserError
from cascade_cli.layouts import NTU25
from cascade_cli.progress import Reporter
from tests.conftest import TINY, nucla_with_a_broken_file, shared_dataset

REPO = Path(__file__).resolve().parents[1]


def tiny_set(path, clips_per_class, extra=None, frames=None) -> Path:
    """A small NTU-25 dataset: `clips_per_class[c]` training clips of class c, two test clips each."""
    rng = np.random.default_rng(0)
    with DatasetWriter(path, "tiny", NTU25, 1, [f"class{c}" for c in range(len(clips_per_class))],
                       extra_fields={k: np.int32 for k in extra or {}}) as writer:
        membership = []
        for c, n in enumerate(clips_per_class):
            for i in range(n + 2):
                clip = frames(c, i) if frames else rng.normal(size=(20, 1, 25, 3)).astype(np.float32) + c
                writer.add_clip(clip, c, f"c{c}_{i}", extra={k: v for k, v in (extra or {}).items()})
                membership.append(0 if i < n else 1)
        writer.set_protocol("p", "first clips train, the last two of each class test", membership)
    return path


def train_args(data, run, *extra):
    return [*[part for o in (*TINY, "pretrain.epochs=1", "finetune.epochs=1", *extra) for part in ("--set", o)],
            "--data", str(data), "--run-dir", str(run)]


# ----------------------------------------------------------------------------------------------
# 1. Small datasets


def test_classes_too_small_to_validate_stay_in_training_with_a_warning(tmp_path, capsys):
    data = tiny_set(tmp_path / "data", [1, 5, 1])
    best = lifecycle.pretrain(tmp_path / "pre", data=data, overrides=[*TINY, "pretrain.epochs=1"],
                              reporter=Reporter())
    out = capsys.readouterr().out
    assert best.is_file()
    assert "2 class(es) have too few training clips" in out and "class0, class2" in out
    lifecycle.finetune(tmp_path / "ft", pretrained=tmp_path / "pre", overrides=["finetune.epochs=1"])
    from cascade_cli.data.splits import run_splits

    cfg = lifecycle.stage_config("finetune", run_dir=tmp_path / "ft", resume=True)
    validated = set(open_dataset(data).labels[run_splits(cfg).val].tolist())
    assert validated == {1}


@pytest.mark.parametrize("fraction", ["0", "0.5"])
def test_no_validation_split_keeps_the_last_epoch_and_says_so(tmp_path, fraction):
    data = tiny_set(tmp_path / "data", [1, 1, 1] if fraction == "0.5" else [3, 3])
    pre = CliRunner().invoke(app, ["pretrain", *train_args(data, tmp_path / "pre", f"data.val_fraction={fraction}")])
    assert pre.exit_code == 0, pre.output
    assert "Traceback" not in pre.output
    ft = CliRunner().invoke(app, ["finetune", "--pretrained", str(tmp_path / "pre"),
                                  *train_args(data, tmp_path / "ft", f"data.val_fraction={fraction}")])
    assert ft.exit_code == 0, ft.output
    assert "no validation split" in ft.output and "keeps its last epoch" in ft.output
    from cascade_cli.checkpoint import checkpoint_meta

    assert checkpoint_meta(tmp_path / "ft" / "checkpoints" / "best.safetensors")["selected_by"] == "last epoch"


def test_unusable_inputs_leave_no_run_directory(tmp_path):
    data = tiny_set(tmp_path / "data", [3, 3])
    result = CliRunner().invoke(app, ["pretrain", *train_args(data, tmp_path / "pre", "pretrain.batch_size=1",
                                                              "accumulate=2")])
    assert result.exit_code == 2 and "batch_size=1 is the global batch" in result.output
    assert not (tmp_path / "pre").exists()
    # ...so the same command, corrected, just works (nothing blocks it).
    ok = CliRunner().invoke(app, ["pretrain", *train_args(data, tmp_path / "pre")])
    assert ok.exit_code == 0, ok.output


# ----------------------------------------------------------------------------------------------
# 2. Quiet hides progress, never problems or results


def test_quiet_keeps_rejections_and_results(tmp_path):
    raw = nucla_with_a_broken_file(tmp_path / "raw")
    prepared = CliRunner().invoke(app, ["prepare", "nucla", "--raw-dir", str(raw), "--out", str(tmp_path / "ds"),
                                        "--workers", "1", "--quiet"])
    assert prepared.exit_code == 0, prepared.output
    assert "rejected" in prepared.output and "a02_s01_e00_v01.json" in prepared.output
    assert "prepared 3 of 4 files" in prepared.output

    data = tiny_set(tmp_path / "data", [3, 3])
    for stage, extra in (("pretrain", []), ("finetune", ["--pretrained", str(tmp_path / "pre")])):
        result = CliRunner().invoke(app, [stage, *extra, *train_args(data, tmp_path / stage[:3]), "--quiet"])
        assert result.exit_code == 0, result.output
        label = "pretrained T1" if stage == "pretrain" else "finetuned model"
        assert f"{label}: {tmp_path / stage[:3] / 'checkpoints' / 'best.safetensors'}" in result.output
        assert "epoch 1/1" not in result.output  # progress stays hidden


# ----------------------------------------------------------------------------------------------
# 3. predict never changes the preprocessing silently


@pytest.fixture(scope="module")
def penn_model(tmp_path_factory):
    from cascade_cli.data.penn import prepare_penn

    root = tmp_path_factory.mktemp("penn")
    prepare_penn(shared_dataset("penn_action", "labels").parent, root / "data", workers=2)
    overrides = [*TINY, "pretrain.epochs=1", "finetune.epochs=1", "data.normalize=image", "data.invisible=zero"]
    lifecycle.pretrain(root / "pre", data=root / "data", overrides=overrides)
    lifecycle.finetune(root / "ft", pretrained=root / "pre")
    return root


def test_a_penn_clip_without_visibility_is_refused_unless_accepted(penn_model, tmp_path):
    from cascade_cli.inference import load_classifier, score_indices
    from cascade_cli.predict import predict

    ds = open_dataset(penn_model / "data")
    i = next(k for k in range(ds.num_clips) if (ds.clip_confidence(k) == 0).any())  # a clip with invisible joints
    xy, visible = ds.clip(i)[:, 0], ds.clip_confidence(i)[:, 0]
    size = (float(ds.meta("width")[i]), float(ds.meta("height")[i]))
    np.save(tmp_path / "xy.npy", xy)
    np.save(tmp_path / "xyv.npy", np.concatenate([xy, visible[..., None]], axis=-1))
    with pytest.raises(UserError, match=r"xy\.npy: no per-joint confidence channel.*--without-confidence"):
        predict(penn_model / "ft", [tmp_path / "xy.npy"], image_size=size)
    # With the visibility channel: exactly what evaluation computes for that clip.
    (full,) = predict(penn_model / "ft", [tmp_path / "xyv.npy"], image_size=size)
    expected = score_indices(load_classifier(penn_model / "ft"), ds, [i]).logits[0]
    np.testing.assert_allclose(full["logits"], expected, atol=1e-5)
    assert "note" not in full
    # Accepted on purpose: another input, and the output says so.
    (accepted,) = predict(penn_model / "ft", [tmp_path / "xy.npy"], image_size=size, without_confidence=True)
    assert "without confidence" in accepted["note"] and not np.allclose(accepted["logits"], expected, atol=1e-5)
    cli = CliRunner().invoke(app, ["predict", str(penn_model / "ft"), str(tmp_path / "xy.npy"), "--image-size",
                                   *map(str, size), "--without-confidence"])
    assert cli.exit_code == 0 and "note: without confidence" in cli.output


# ----------------------------------------------------------------------------------------------
# 4. Damaged data is refused before training; non-finite inputs are named as such


def test_a_flipped_byte_stops_training_before_anything_is_written(tmp_path, monkeypatch):
    import cascade_cli.data.format as fmt

    data = tiny_set(tmp_path / "data", [3, 3])
    calls = []
    real_verify = fmt.PreparedDataset.verify
    monkeypatch.setattr(fmt.PreparedDataset, "verify", lambda self: calls.append(1) or real_verify(self))
    lifecycle.pretrain(tmp_path / "ok", data=data, overrides=[*TINY, "pretrain.epochs=1"])
    lifecycle.pretrain(tmp_path / "ok2", data=data, overrides=[*TINY, "pretrain.epochs=1"])
    assert len(calls) == 1  # verified once; the stamp spares unchanged files a second hashing
    frames = data / "frames.f32"
    raw = bytearray(frames.read_bytes())
    raw[100] ^= 0xFF
    frames.write_bytes(bytes(raw))
    with pytest.raises(UserError, match=r"frames\.f32: array 'frames' does not match its checksum.*cascade data info"):
        lifecycle.pretrain(tmp_path / "bad", data=data, overrides=[*TINY, "pretrain.epochs=1"])
    assert not (tmp_path / "bad").exists()


def test_nan_frames_are_named_before_training(tmp_path):
    # A dataset from a writer of one's own, with matching checksums but a NaN in clip c1_2.
    import hashlib

    import yaml

    data = tiny_set(tmp_path / "data", [3, 3])
    ds = open_dataset(data)
    frames = np.memmap(data / "frames.f32", dtype=np.float32, mode="r+", shape=ds.frames.shape)
    frames[int(ds.offsets[list(ds.names).index("c1_2")]) + 3, 0, 4, 1] = np.nan
    frames.flush()
    manifest = yaml.safe_load((data / "dataset.yaml").read_text())
    manifest["arrays"]["frames"]["sha256"] = hashlib.sha256((data / "frames.f32").read_bytes()).hexdigest()
    (data / "dataset.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(UserError, match=r"clip c1_2 holds NaN or inf coordinates"):
        lifecycle.pretrain(tmp_path / "pre", data=data, overrides=[*TINY, "pretrain.epochs=1"])
    assert not (tmp_path / "pre").exists()


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # the division by a zero width, on purpose
def test_non_finite_inputs_are_blamed_on_the_data_not_the_learning_rate(tmp_path):
    # Image-size normalisation by a width of 0: finite data, infinite model inputs.
    data = tiny_set(tmp_path / "data", [3, 3], extra={"width": 0, "height": 0})
    with pytest.raises(UserError, match=r"loss became nan because batch 1's inputs hold NaN or inf.*data info"):
        lifecycle.pretrain(tmp_path / "pre", data=data, overrides=[*TINY, "pretrain.epochs=1", "data.normalize=image"])


# ----------------------------------------------------------------------------------------------
# 5. A killed prepare takes its workers with it


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux) to follow child processes")
def test_killing_prepare_leaves_no_worker_behind(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(40):
        (raw / f"clip_{i:03d}.txt").write_text(f"{i % 3} 5")
    code = ("import sys; from cascade_cli.data.prepare import prepare; from tests.test_prepare import SPEC, parse_slowly; "
            f"prepare(SPEC, sorted(str(p) for p in __import__('pathlib').Path({str(raw)!r}).iterdir()), parse_slowly, "
            f"{str(tmp_path / 'out')!r}, raw_dir='raw', workers=2, chunk_size=1)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    deadline, workers = time.time() + 60, set()
    while time.time() < deadline and len(workers) < 2 and proc.poll() is None:
        workers = _descendants(proc.pid)
        time.sleep(0.05)
    assert len(workers) >= 2, "the pool never started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_running(p) for p in workers):
        time.sleep(0.1)
    left = [p for p in workers if _running(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"{len(left)} process(es) outlived the killed prepare"


# ----------------------------------------------------------------------------------------------
# 6. Strict leaves nothing, files follow the umask, YAML errors have a line, paths say what is wrong


def test_strict_failure_leaves_no_partial_folder(tmp_path):
    raw = nucla_with_a_broken_file(tmp_path / "raw")
    result = CliRunner().invoke(app, ["prepare", "nucla", "--raw-dir", str(raw), "--out", str(tmp_path / "ds"),
                                      "--workers", "1", "--strict"])
    assert result.exit_code == 2 and "a02_s01_e00_v01.json" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_checkpoints_follow_the_umask_like_every_other_file(tmp_path):
    data = tiny_set(tmp_path / "data", [3, 3])
    old = os.umask(0o027)
    try:
        lifecycle.pretrain(tmp_path / "pre", data=data, overrides=[*TINY, "pretrain.epochs=1"])
    finally:
        os.umask(old)
    run = tmp_path / "pre"
    modes = {p.relative_to(run).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in run.rglob("*") if p.is_file()}
    assert modes["checkpoints/best.safetensors"] == modes["config.yaml"] == 0o640, modes
    assert set(modes.values()) == {0o640}, modes


def test_yaml_syntax_errors_name_the_line(tmp_path):
    from cascade_cli.config import load_config

    preset = tmp_path / "mine.yaml"
    preset.write_text("model:\n  d_model: 64\n  t1_layers: [2\npretrain:\n  epochs: 3\n")
    with pytest.raises(UserError, match=r"mine\.yaml line 4, column 9: not valid YAML"):
        load_config(str(preset))


def test_missing_and_wrong_directories_say_which(tmp_path):
    (tmp_path / "file").write_text("x")
    runner = CliRunner()
    missing = runner.invoke(app, ["pretrain", "--data", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "r")])
    assert missing.exit_code == 2 and "nowhere: no such prepared dataset directory" in missing.output
    wrong = runner.invoke(app, ["pretrain", "--data", str(tmp_path / "file"), "--run-dir", str(tmp_path / "r")])
    assert "file: is a file, but a prepared dataset directory is expected" in wrong.output
    raw = runner.invoke(app, ["prepare", "penn", "--raw-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert raw.exit_code == 2 and "nowhere: no such folder of raw files" in raw.output
    empty = runner.invoke(app, ["pretrain", "--data", str(tmp_path), "--run-dir", str(tmp_path / "r")])
    assert f"{tmp_path}: not a prepared dataset (no dataset.yaml)" in empty.output


# ----------------------------------------------------------------------------------------------
# 7. Narrow terminals: typed names whole, help that flows


def test_preset_names_are_whole_at_80_columns(monkeypatch):
    from cascade_cli.config import list_presets

    monkeypatch.setenv("COLUMNS", "80")
    result = CliRunner().invoke(app, ["presets", "list"])
    assert result.exit_code == 0
    rows = [line.split("│")[1].strip() for line in result.output.splitlines() if line.startswith("│")]
    assert [r for r in rows if r] == list_presets()
    assert max(map(len, result.output.splitlines())) <= 80


@pytest.mark.parametrize("command", [["prepare", "custom"], ["finetune"], ["evaluate"], ["layouts", "show"],
                                     ["export"]])
def test_help_paragraphs_flow_and_nothing_is_cut_at_80_columns(monkeypatch, command):
    monkeypatch.setenv("COLUMNS", "80")
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "…" not in result.output  # Rich's ellipsis: a cut word
    # Each prose line of the description is filled up to the width: no line ends mid-sentence far
    # short of it, as hard line breaks of the source would make.
    description = result.output.split("╭")[0].splitlines()
    prose = [line.strip() for line in description if line.strip() and not line.strip().startswith(("Usage", "Example"))]
    for line, following in zip(prose, prose[1:]):
        if not line.endswith((".", ":")) and not following.startswith(("cascade", "$")):
            assert len(line) + 1 + len(following.split()[0]) > 76, (line, following)


# ----------------------------------------------------------------------------------------------
# 8. Layouts a user defines


KINECT_V1_MSR = """\
# MSR Action3D's 20 Kinect v1 joints, in that dataset's own order (not the Kinect SDK's).
name: msr20
coords: 3
joint_names: [ShoulderLeft, ShoulderRight, Neck, Spine, HipLeft, HipRight, HipCenter, ElbowLeft, ElbowRight,
  WristLeft, WristRight, HandLeft, HandRight, KneeLeft, KneeRight, AnkleLeft, AnkleRight, FootLeft, FootRight, Head]
bones: [[Spine, HipCenter], [Neck, Spine], [Head, Neck], [ShoulderLeft, Neck], [ShoulderRight, Neck],
  [ElbowLeft, ShoulderLeft], [ElbowRight, ShoulderRight], [WristLeft, ElbowLeft], [WristRight, ElbowRight],
  [HandLeft, WristLeft], [HandRight, WristRight], [HipLeft, HipCenter], [HipRight, HipCenter], [KneeLeft, HipLeft],
  [KneeRight, HipRight], [AnkleLeft, KneeLeft], [AnkleRight, KneeRight], [FootLeft, AnkleLeft], [FootRight, 16]]
center: HipCenter
"""


def test_a_layout_file_prepares_and_trains_a_dataset(tmp_path):
    from cascade_cli.layouts import get_layout, layout_yaml, load_layout

    (tmp_path / "msr20.yaml").write_text(KINECT_V1_MSR)
    layout = load_layout(tmp_path / "msr20.yaml")
    assert layout.num_joints == 20 and layout.center == 6 and (18, 16) in layout.bones
    (tmp_path / "again.yaml").write_text(layout_yaml(layout))
    assert load_layout(tmp_path / "again.yaml") == layout  # `layouts show --yaml` writes what it reads
    assert get_layout(str(tmp_path / "msr20.yaml")) == layout

    clips = tmp_path / "clips"
    clips.mkdir()
    rng = np.random.default_rng(0)
    lines = ["clip,label,split"]
    for i in range(12):
        np.save(clips / f"c{i}.npy", rng.normal(size=(16, 20, 3)).astype(np.float32) + 5.0)
        lines.append(f"c{i},{'ab'[i % 2]},{'train' if i < 8 else 'test'}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["prepare", "custom", "--clips", str(clips), "--labels", str(tmp_path / "labels.csv"),
                                      "--layout", str(tmp_path / "msr20.yaml"), "--out", str(tmp_path / "data"), "-q"])
    assert result.exit_code == 0, result.output
    ds = open_dataset(tmp_path / "data")
    assert ds.layout == layout
    # data.center_joint=-2 centres on the layout's centre joint, whatever its index.
    from cascade_cli.config import load_config
    from cascade_cli.data.pipeline import ClipDataset

    cfg = load_config(None, ["data.center_joint=-2", "data.frames=0"]).data
    x, _ = ClipDataset(ds, [0], cfg, train=False, seed=0)[0]
    assert np.allclose(x[0, 6].numpy(), 0.0) and not np.allclose(x[0, 3].numpy(), 0.0)
    lifecycle.pretrain(tmp_path / "pre", data=tmp_path / "data",
                       overrides=[*TINY, "pretrain.epochs=1", "data.center_joint=-2", "data.val_fraction=0.25"])


@pytest.mark.parametrize("text, message", [
    ("coords: 3\nbones: []\n", "missing key 'joint_names'"),
    ("coords: 4\njoint_names: [a, b]\nbones: []\n", "coords: 4; use 2 (image) or 3"),
    ("coords: 2\njoint_names: [a, b, a]\nbones: []\n", "joint_names: 'a' appears twice"),
    ("coords: 2\njoint_names: [a, b]\nbones: [[a, c]]\n", "bones[0]: 'c' is not one of the joint_names"),
    ("coords: 2\njoint_names: [a, b]\nbones: [[0, 2]]\n", "bones[0]: joint index 2 is outside 0..1"),
    ("coords: 2\njoint_names: [a, b]\nbones: [[a, a]]\n", "bones[0]: joint 'a' is joined to itself"),
    ("coords: 2\njoint_names: [a, b]\nbones: [a]\n", "bones[0]: 'a' is not a [child, parent] pair"),
    ("coords: 2\njoint_names: [a, b]\nbones: []\ncentre: a\n", "unknown key 'centre'"),
    ("coords: 2\njoint_names: [a, b]\nbones: []\ncenter: z\n", "center: 'z' is not one of the joint_names"),
    ("coords: 2\njoint_names: [a, b\n", "line 3, column 1: not valid YAML"),
])
def test_layout_files_are_validated_with_one_line_errors(tmp_path, text, message):
    (tmp_path / "layout.yaml").write_text(text)
    result = CliRunner().invoke(app, ["layouts", "show", str(tmp_path / "layout.yaml")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'layout.yaml'}") and message in lines[0], lines


def test_layouts_list_and_show():
    from cascade_cli.layouts import LAYOUTS

    listed = CliRunner().invoke(app, ["layouts", "list"])
    assert listed.exit_code == 0 and all(name in listed.output for name in LAYOUTS)
    shown = CliRunner().invoke(app, ["layouts", "show", "penn13"])
    assert shown.exit_code == 0 and "left_shoulder" in shown.output and "13 joints, 2-D" in shown.output
    unknown = CliRunner().invoke(app, ["layouts", "show", "kinect2"])
    assert unknown.exit_code == 2 and "unknown skeleton layout 'kinect2'" in unknown.output


# ----------------------------------------------------------------------------------------------
# 9. What a run directory holds: its log, a CSV, TensorBoard, the last k epochs, early stopping


def test_a_run_directory_holds_its_log_a_csv_and_the_last_epochs(tmp_path):
    import csv

    data = tiny_set(tmp_path / "data", [4, 4])
    result = CliRunner().invoke(app, ["pretrain", *train_args(data, tmp_path / "pre", "pretrain.epochs=4",
                                                              "pretrain.keep_last=2", "log.tensorboard=true"),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "pre"
    log = (run / "run.log").read_text()
    # The whole log, quiet or not: when and what was run, the announcement, every epoch.
    assert log.startswith("# 20") and "pretraining CascadeFormer" in log
    assert all(f"pretrain epoch {e}/4" in log for e in range(1, 5))
    with open(run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["train_loss"]) for r in rows] == pytest.approx([line["train_loss"] for line in lines])
    assert sorted(p.name for p in (run / "checkpoints").glob("epoch-*")) == ["epoch-0003.safetensors",
                                                                             "epoch-0004.safetensors"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    losses = events.Scalars("pretrain/train_loss")
    assert [e.step for e in losses] == [1, 2, 3, 4]
    assert [e.value for e in losses] == pytest.approx([line["train_loss"] for line in lines])


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # the division by a zero width, on purpose
def test_the_log_file_keeps_the_error_that_ended_a_run(tmp_path):
    data = tiny_set(tmp_path / "data", [3, 3], extra={"width": 0, "height": 0})
    with pytest.raises(UserError):
        lifecycle.pretrain(tmp_path / "pre", data=data, overrides=[*TINY, "pretrain.epochs=1", "data.normalize=image"])
    assert "error: pretrain epoch 1: loss became nan" in (tmp_path / "pre" / "run.log").read_text()


def test_patience_stops_a_stage_and_a_rerun_sees_it_finished(tmp_path, monkeypatch):
    import cascade_cli.training.objectives as objectives

    data = tiny_set(tmp_path / "data", [4, 4])
    # A validation top-1 that peaks at epoch 2 and never improves after it.
    scores = iter([0.5, 0.75, 0.5, 0.5, 0.75, 0.5, 0.5, 0.5])
    monkeypatch.setattr(objectives.FinetuneObjective, "validate",
                        lambda self, model, loader, device: {"val_loss": 1.0, "val_top1": next(scores)})
    cfg = lifecycle.stage_config("pretrain", data=data, overrides=[*TINY, "pretrain.epochs=1",
                                                                              "finetune.epochs=8", "finetune.patience=3"])
    result = lifecycle.run_stages(cfg, tmp_path / "pre", tmp_path / "ft")
    records = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "event" not in r] == [1, 2, 3, 4, 5]
    assert records[-1] == {"event": "early_stop", "stage": "finetune", "epoch": 5, "best_epoch": 2, "patience": 3}
    from cascade_cli.checkpoint import checkpoint_meta

    assert checkpoint_meta(tmp_path / "ft" / "checkpoints" / "best.safetensors")["epoch"] == 2
    assert result.report["model"]["epoch"] == 2
    again = lifecycle.run_stages(cfg, tmp_path / "pre", tmp_path / "ft")  # finished: nothing trains
    assert (tmp_path / "ft" / "metrics.jsonl").read_text().count("\n") == len(records)
    assert again.report["top1"] == result.report["top1"]
    with pytest.raises(UserError, match="finetune.patience': early stopping watches the validation split"):
        lifecycle.finetune(tmp_path / "novalidation", pretrained=tmp_path / "pre",
                           overrides=["data.val_fraction=0", "finetune.patience=2"])


def test_a_validation_tie_goes_to_the_lower_validation_loss(tmp_path, monkeypatch):
    import cascade_cli.training.objectives as objectives
    from cascade_cli.checkpoint import checkpoint_meta
    from cascade_cli.training.loop import Selection

    data = tiny_set(tmp_path / "data", [4, 4])
    # Epochs 2, 3 and 4 tie on top-1; epoch 3 has the lowest loss of them, epoch 5 the lowest of all.
    val = iter([(0.5, 1.0), (0.75, 0.9), (0.75, 0.7), (0.75, 0.8), (0.5, 0.6)])
    monkeypatch.setattr(objectives.FinetuneObjective, "validate",
                        lambda self, model, loader, device: dict(zip(("val_top1", "val_loss"), next(val))))
    cfg = lifecycle.stage_config("pretrain", data=data, overrides=[*TINY, "pretrain.epochs=1", "finetune.epochs=5"])
    lifecycle.run_stages(cfg, tmp_path / "pre", tmp_path / "ft")
    assert checkpoint_meta(tmp_path / "ft" / "checkpoints" / "best.safetensors")["epoch"] == 3
    # A run saved before ties were broken resumes as it selected then: a tie keeps the earlier epoch.
    old = Selection("val", True, 0)
    old.restore({"best_score": 0.75, "best_epoch": 2, "score_best": 0.75, "score_best_epoch": 2})
    assert not old.update(3, 0.75, 0.1) and old.best_epoch == 2
    assert old.update(4, 0.8, 0.9) and old.update(5, 0.8, 0.5) and old.best_epoch == 5


def test_a_converted_folder_works_wherever_a_run_directory_does(tmp_path):
    from cascade_cli.checkpoint import resolve_checkpoint

    data = tiny_set(tmp_path / "data", [3, 3])
    lifecycle.pretrain(tmp_path / "pre", data=data, overrides=[*TINY, "pretrain.epochs=1"])
    lifecycle.finetune(tmp_path / "ft", pretrained=tmp_path / "pre")
    converted = tmp_path / "converted"  # the layout `cascade convert` writes
    converted.mkdir()
    (converted / "pretrained.safetensors").write_bytes((tmp_path / "pre/checkpoints/best.safetensors").read_bytes())
    (converted / "finetuned.safetensors").write_bytes((tmp_path / "ft/checkpoints/best.safetensors").read_bytes())
    assert resolve_checkpoint(converted, kind="pretrain").name == "pretrained.safetensors"
    np.save(tmp_path / "clip.npy", open_dataset(data).clip(0)[:, 0])
    predicted = CliRunner().invoke(app, ["predict", str(converted), str(tmp_path / "clip.npy"), "--json"])
    assert predicted.exit_code == 0, predicted.output
    evaluated = CliRunner().invoke(app, ["evaluate", str(converted), "--data", str(data), "--quiet"])
    assert evaluated.exit_code == 0 and evaluated.output.startswith("top1 ")
    again = lifecycle.finetune(tmp_path / "ft2", pretrained=converted, overrides=["finetune.epochs=1"])
    assert again.is_file()
