"""Which precision training runs in: amp=auto follows what torch reports of the hardware (mocked
here for every combination), the run log says what ran and why, and inference stays float32
unless asked."""

import json

import pytest
import torch

import cascade_cli.runtime as runtime
from tests.conftest import TINY

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def fake_cpu(monkeypatch, *, amx=False, avx512_bf16=False, arm=False, onednn_bf16=False):
    """A CPU as torch's capability checks would describe it."""
    monkeypatch.setattr(runtime.platform, "machine", lambda: "aarch64" if arm else "x86_64")
    monkeypatch.setattr(runtime, "_torch_reports", _checks(amx, avx512_bf16, onednn_bf16))


def _checks(amx, avx512_bf16, onednn_bf16):
    answers = {"_is_amx_tile_supported": amx, "_is_avx512_bf16_supported": avx512_bf16,
               "_is_mkldnn_bf16_supported": onednn_bf16}
    return lambda namespace, check: answers[check]


@pytest.mark.parametrize("amx, avx512_bf16, arm, onednn_bf16, units", [
    (True, True, False, True, "AMX bf16 tiles"),                  # Intel Sapphire Rapids and later
    (True, False, False, True, "AMX bf16 tiles"),
    (False, True, False, True, "AVX-512 BF16 instructions"),      # AMD Zen 4/5, Intel Cooper Lake
    (False, False, False, True, None),   # AVX-512 without BF16: oneDNN says bf16 "works", but emulated
    (False, False, False, False, None),  # AVX2 only
    (False, False, True, True, "Arm BF16 instructions"),          # Graviton 3, Neoverse V1/V2
    (False, False, True, False, None),                            # Arm without the BF16 extension
])
def test_auto_takes_bf16_exactly_where_the_cpu_has_bf16_matrix_hardware(monkeypatch, amx, avx512_bf16, arm,
                                                                         onednn_bf16, units):
    fake_cpu(monkeypatch, amx=amx, avx512_bf16=avx512_bf16, arm=arm, onednn_bf16=onednn_bf16)
    assert runtime.cpu_bf16_units() == units
    auto = runtime.choose_precision("auto", CPU)
    if units:
        assert auto.dtype is torch.bfloat16 and units in auto.reason and auto.warning is None
    else:
        assert auto.dtype is None and "no bf16 matrix hardware" in auto.reason and "amp=bf16" in auto.reason
    # What is asked for explicitly does not depend on the hardware.
    assert runtime.choose_precision("off", CPU) == runtime.Precision(None, "amp=off")
    assert runtime.choose_precision("bf16", CPU).dtype is torch.bfloat16
    fp16 = runtime.choose_precision("fp16", CPU)
    assert fp16.dtype is None and "needs CUDA" in fp16.warning


def test_a_torch_without_the_private_checks_means_float32(monkeypatch):
    for check in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.delattr(torch.cpu, check, raising=False)
    monkeypatch.setattr(runtime.platform, "machine", lambda: "x86_64")
    assert runtime.cpu_bf16_units() is None
    assert runtime.choose_precision("auto", CPU).dtype is None


@pytest.mark.parametrize("bf16_gpu", [True, False])
def test_auto_on_cuda_takes_bf16_where_the_gpu_has_it_else_fp16(monkeypatch, bf16_gpu):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_gpu)
    auto = runtime.choose_precision("auto", CUDA)
    assert auto.dtype is (torch.bfloat16 if bf16_gpu else torch.float16)
    assert ("loss scaling" in auto.reason) != bf16_gpu
    assert runtime.choose_precision("fp16", CUDA).dtype is torch.float16
    assert runtime.choose_precision("bf16", CUDA).dtype is torch.bfloat16
    assert runtime.choose_precision("off", CUDA).dtype is None


@pytest.mark.parametrize("amp, units, says", [
    ("auto", "AVX-512 BF16 instructions", "precision: bfloat16 autocast on cpu (amp=auto: this CPU has AVX-512 BF16"),
    ("auto", None, "precision: float32 on cpu (amp=auto: this CPU has no bf16 matrix hardware"),
    ("bf16", None, "precision: bfloat16 autocast on cpu (amp=bf16)"),
    ("off", "AMX bf16 tiles", "precision: float32 on cpu (amp=off)"),
])
def test_the_run_log_says_which_precision_ran_and_why(monkeypatch, tiny_dataset, tmp_path, amp, units, says):
    import cascade_cli.training as train
    from cascade_cli.config import load_config
    from cascade_cli.progress import Reporter

    monkeypatch.setattr(runtime, "cpu_bf16_units", lambda: units)
    cfg = load_config(None, [*TINY, "pretrain.epochs=1", f"amp={amp}"], base={"data": {"path": str(tiny_dataset)}})
    train.pretrain(cfg, tmp_path / "pre", Reporter(quiet=True))
    cfg.finetune.pretrained, cfg.finetune.epochs = str(tmp_path / "pre"), 1
    train.finetune(cfg, tmp_path / "ft", Reporter(quiet=True))
    for run in ("pre", "ft"):
        assert says in (tmp_path / run / "run.log").read_text()
        (line,) = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        assert 0 < json.loads(line)["train_loss"] < 10


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset, tmp_path_factory):
    from tests.test_evaluate import train_tiny

    return train_tiny(tiny_dataset, tmp_path_factory.mktemp("precision"))


def test_inference_runs_in_float32_unless_bf16_is_asked_for(tiny_run, tmp_path):
    from cascade_cli.evaluate import evaluate
    from cascade_cli.inference import load_classifier, score_split

    default = load_classifier(tiny_run, "cpu")
    assert default.precision == "fp32" and default.backend.autocast is None
    fp32 = score_split(default, "test")
    bf16 = score_split(load_classifier(tiny_run, "cpu", "bf16"), "test")
    assert fp32.logits.dtype == bf16.logits.dtype == "float32"
    # bf16 rounds every product: close to float32's logits, but not the same numbers.
    assert 0 < abs(fp32.logits - bf16.logits).max() < 0.1 * abs(fp32.logits).max()
    report = evaluate(tiny_run, device="cpu", out=tmp_path / "bf16.json", precision="bf16")
    assert report["precision"] == "bf16"
    assert evaluate(tiny_run, device="cpu", out=tmp_path / "fp32.json")["precision"] == "fp32"


def test_inference_precision_that_cannot_run_is_a_one_line_error(tiny_run, tmp_path):
    import numpy as np
    from typer.testing import CliRunner

    from cascade_cli.cli import app
    from cascade_cli.data.format import open_dataset
    from cascade_cli.errors import UserError
    from cascade_cli.inference import load_classifier

    with pytest.raises(UserError, match="--precision fp16 needs a CUDA device"):
        load_classifier(tiny_run, "cpu", "fp16")
    clip = tmp_path / "one.npy"
    np.save(clip, open_dataset(load_classifier(tiny_run, "cpu").config.data.path).clip(1)[:, 0])
    runner = CliRunner()
    ok = runner.invoke(app, ["predict", str(tiny_run), str(clip), "--precision", "bf16", "--device", "cpu", "--json"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["predict", str(tiny_run), str(clip), "--precision", "fp16", "--device", "cpu"])
    assert bad.exit_code != 0 and "needs a CUDA device" in bad.output and "Traceback" not in bad.output
    mixed = runner.invoke(app, ["evaluate", str(tiny_run), "--early-exit", "--precision", "bf16"])
    assert mixed.exit_code != 0 and "leave out --precision" in mixed.output
