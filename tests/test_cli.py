"""The command line as a user meets it: help texts, clean errors, and a full lifecycle."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cascade_cli.cli import app
from tests.conftest import TINY

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def sets(*overrides):
    return [part for o in overrides for part in ("--set", o)]


@pytest.mark.parametrize("command", [[], ["prepare"], ["prepare", "synthetic"], ["pretrain"], ["finetune"],
                                     ["evaluate"], ["demo"]])
def test_every_command_has_teaching_help(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    if command and command != ["prepare"]:
        assert "Example:" in result.output
    if command in (["pretrain"], ["finetune"]):
        for option in ("--preset", "--set", "--print-config", "--run-dir", "--gpu", "--device", "--seed",
                       "--resume", "--quiet"):
            assert option in result.output


def test_wrong_set_key_is_one_clean_line_and_exit_2(tmp_path):
    # A real subprocess: what the user sees, with no traceback on stderr.
    proc = subprocess.run([sys.executable, "-m", "cascade_cli", "pretrain", "--data", str(tmp_path),
                           "--set", "model.dmodel=64"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown config key 'model.dmodel'")


def test_print_config_shows_resolved_values():
    result = invoke("pretrain", "--preset", "demo", *sets("model.d_model=48"), "--seed", 5, "--print-config")
    assert result.exit_code == 0
    assert "d_model: 48" in result.output and "seed: 5" in result.output


def test_missing_dataset_is_a_user_error(tmp_path):
    result = invoke("pretrain", "--data", tmp_path / "nowhere", "--run-dir", tmp_path / "run")
    assert result.exit_code != 0
    assert "nowhere" in result.output


def test_full_lifecycle_through_the_cli(tmp_path):
    data = tmp_path / "data"
    assert invoke("prepare", "synthetic", "--out", data, "--clips-per-class", 12, "--quiet").exit_code == 0
    assert (data / "dataset.yaml").is_file()
    # Preparing again refuses to clobber the dataset.
    again = invoke("prepare", "synthetic", "--out", data)
    assert again.exit_code == 2 and "exist" in again.output

    long = sets(*TINY, "pretrain.epochs=3", "finetune.epochs=12", "model.d_model=48",
                "finetune.optim.lr=2e-3", "data.val_fraction=0.15")
    pre = invoke("pretrain", "--data", data, *long, "--run-dir", tmp_path / "pre", "--quiet")
    assert pre.exit_code == 0, pre.output
    ft = invoke("finetune", "--pretrained", tmp_path / "pre", *long, "--run-dir", tmp_path / "ft", "--quiet")
    assert ft.exit_code == 0, ft.output
    for run in ("pre", "ft"):
        assert (tmp_path / run / "config.yaml").is_file()
        assert (tmp_path / run / "checkpoints" / "best.safetensors").is_file()
    metrics = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == list(range(1, 13))

    result = invoke("evaluate", tmp_path / "ft")
    assert result.exit_code == 0, result.output
    assert "top-1" in result.output
    report = json.loads((tmp_path / "ft" / "eval_test.json").read_text())
    num_classes = len(__import__("yaml").safe_load((data / "dataset.yaml").read_text())["class_names"])
    assert report["split"] == "test" and report["clips"] > 0
    assert report["top1"] >= 3.0 / num_classes, report  # far above chance
    assert report["top5"] >= report["top1"]

    detailed = invoke("evaluate", tmp_path / "ft", "--per-class-breakdown", "--save-scores")
    assert detailed.exit_code == 0, detailed.output
    assert "per class" in detailed.output and (tmp_path / "ft" / "eval_test_confusion.png").is_file()
    assert (tmp_path / "ft" / "eval_test_scores.npz").is_file()
    both = invoke("evaluate", tmp_path / "ft", tmp_path / "ft", "--out", tmp_path / "seeds.json")
    assert both.exit_code == 0 and "mean ± std" in both.output and "± 0.00 %" in both.output
    assert json.loads((tmp_path / "seeds.json").read_text())["top1"]["std"] == 0.0

    # Evaluating a pretraining run is refused with a reason.
    bad = invoke("evaluate", tmp_path / "pre")
    assert bad.exit_code == 2 and "pretrain checkpoint has no classifier" in bad.output


def test_prepare_and_inspect_real_nucla_through_the_cli(tmp_path):
    from tests.conftest import shared_dataset

    raw = shared_dataset("nw_ucla", "all_sqe")
    result = invoke("prepare", "nucla", "--raw-dir", raw, "--out", tmp_path / "nucla", "--workers", 2)
    assert result.exit_code == 0, result.output
    assert "prepared 1484 of 1484 files" in result.output
    assert "protocol cross_view: 1020 train / 464 test" in result.output
    assert "warning" in result.output and "a04_s01_e01_v01.json" in result.output
    info = invoke("data", "info", tmp_path / "nucla")
    assert info.exit_code == 0, info.output
    assert "integrity: every array matches its checksum" in info.output
    assert "pick up with one hand" in info.output.replace("_", " ")
    # A flipped byte in the frames is caught by the integrity check.
    frames = tmp_path / "nucla" / "frames.f32"
    data = bytearray(frames.read_bytes())
    data[1000] ^= 0xFF
    frames.write_bytes(bytes(data))
    broken = invoke("data", "info", tmp_path / "nucla")
    assert broken.exit_code == 1 and "does not match its checksum" in broken.output


def test_bad_file_is_reported_and_strict_fails(tmp_path):
    from tests.conftest import nucla_with_a_broken_file

    raw = nucla_with_a_broken_file(tmp_path / "raw", good=4)
    lenient = invoke("prepare", "nucla", "--raw-dir", raw, "--out", tmp_path / "ok", "--workers", 1)
    assert lenient.exit_code == 0, lenient.output
    assert "prepared 4 of 5 files" in lenient.output and "rejected" in lenient.output
    strict = invoke("prepare", "nucla", "--raw-dir", raw, "--out", tmp_path / "strict", "--workers", 1, "--strict")
    assert strict.exit_code != 0 and "a02_s01_e00_v01.json" in strict.output
    assert not (tmp_path / "strict").exists()


def test_demo_on_a_prepared_dataset(tiny_dataset, tmp_path):
    result = invoke("demo", "--data", tiny_dataset, "--out", tmp_path / "demo", "--quiet",
                    *sets("pretrain.epochs=1", "finetune.epochs=1", "model.d_model=32"))
    assert result.exit_code == 0, result.output
    assert "demo test top-1:" in result.output
    assert not (tmp_path / "demo" / "data").exists()  # nothing was prepared


def test_error_text_with_brackets_is_printed_verbatim(tmp_path):
    # Rich would read "[bold]" as markup and swallow it; user-facing text must come out as written.
    odd = tmp_path / "[bold]runs"
    result = invoke("evaluate", odd)
    assert result.exit_code == 2
    assert "[bold]runs: no such run directory or checkpoint file" in result.output


def choice_lists():
    """Per command, the choice lists its --help must show, in the metavar form Typer gives an enum."""
    from cascade_cli.ablate import STUDIES
    from cascade_cli.data.registry import NW_UCLA
    from cascade_cli.layouts import LAYOUTS
    from cascade_cli.official.release import DATASETS, VARIANTS

    return {"prepare nucla": [NW_UCLA.joint_orders], "evaluate": [("test", "val", "train")],
            "download": [VARIANTS], "convert": [VARIANTS], "ablate": [STUDIES, ("quick", "paper")]}


def listed_in_prose():
    """Choices too long for the option column (it would squeeze typed option names at 80 columns):
    the help text names each of them, and the option still refuses any other value."""
    from cascade_cli.layouts import LAYOUTS
    from cascade_cli.official.release import DATASETS

    return {"prepare custom": LAYOUTS, "download": DATASETS, "convert": DATASETS}


@pytest.mark.parametrize("command", ["prepare nucla", "prepare custom", "evaluate", "download", "convert", "ablate"])
def test_help_lists_the_choices(command, monkeypatch):
    # The help texts name the choices in prose too: the "a|b" form proves the option itself knows them.
    monkeypatch.setenv("COLUMNS", "250")  # no wrapping inside a long choice list
    result = invoke(*command.split(), "--help")
    assert result.exit_code == 0, result.output
    for choices in choice_lists().get(command, []):
        assert "|".join(choices) in result.output
    for choice in listed_in_prose().get(command, []):
        assert choice in result.output


def test_wrong_choice_is_a_usage_error_naming_the_choices():
    # A real subprocess: Typer's own message, exit code 2, and no traceback.
    proc = subprocess.run([sys.executable, "-m", "cascade_cli", "evaluate", "RUN", "--split", "dev"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "'dev'" in proc.stderr and all(f"'{split}'" in proc.stderr for split in ("test", "val", "train"))


@pytest.mark.parametrize("args, message", [
    (["prepare", "nucla", "--raw-dir", "raw", "--out", "out", "--joint-order", "skateformer"],
     "'skateformer' is not one of"),
    # --layout also takes a layout file, so the layout's name is checked by the library, as early.
    (["prepare", "custom", "--clips", "c", "--labels", "l.csv", "--out", "out", "--layout", "coco18"],
     "unknown skeleton layout 'coco18'; known layouts: coco17"),
    (["download", "--dataset", "ucla"], "'ucla' is not one of"),
    (["convert", "src", "--out", "out", "--variant", "2.0"], "'2.0' is not one of"),
    (["ablate", "depth"], "'depth' is not one of"),
    (["ablate", "decoder", "--budget", "large"], "'large' is not one of"),
])
def test_wrong_choices_are_rejected_before_any_work(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert list(tmp_path.iterdir()) == []
