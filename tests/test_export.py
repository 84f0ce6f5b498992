"""`cascade export --format onnx` and `--backend onnx`: verified graphs of every variant, the same
predictions, cascade decisions and stream records as PyTorch, and bad inputs that leave nothing."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cascade_cli.checkpoint import save_checkpoint
from cascade_cli.cli import app
from cascade_cli.config import load_config
from cascade_cli.data.format import open_dataset
from cascade_cli.data.pipeline import model_input_shape
from cascade_cli.errors import UserError
from cascade_cli.inference import load_classifier
from cascade_cli.inference.cascade import cascade_forward, exit_confidence
from cascade_cli.model import build_classifier, padding_mask
from cascade_cli.model.exits import add_exits
from cascade_cli.predict import predict
from cascade_cli.stream.classify import classify_stream, stream_classifier
from tests.conftest import TINY

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

from cascade_cli.export import export_onnx, load_exported  # noqa: E402  (needs the extra)

EXITS = ("t1", "t2_layer1")  # with one layer in T1 and T2: a stage into T2 and one that is only the head


def tiny_run(folder, dataset_dir, variant: str, exits: tuple[str, ...] = ()):
    """A finetuning run folder holding a random-weight classifier of `variant` as its best checkpoint,
    with the metadata finetuning writes: export needs the checkpoint, not a trained model."""
    cfg = load_config(None, [*TINY, f"model.variant={variant}", "model.spatial_form=code"],
                      base={"data": {"path": str(dataset_dir)}})
    ds = open_dataset(dataset_dir)
    joints, channels = model_input_shape(ds, cfg.data)
    torch.manual_seed(int(variant[-1]))
    model = build_classifier(cfg.model, joints, channels, ds.num_classes)
    if exits:
        add_exits(model, exits)
        for head in model.exits.values():  # confident enough that some clips leave and some stay
            torch.nn.init.normal_(head.fc.weight, std=2.0)
    meta = {"kind": "finetune", "variant": variant, "num_classes": ds.num_classes, "dataset": ds.name,
            "protocol": "xsub", "layout": ds.layout.to_dict(), "class_names": list(ds.class_names),
            "num_joints": joints, "in_channels": channels, "confidence": ds.has_confidence, "epoch": 1}
    save_checkpoint(folder / "checkpoints" / "best.safetensors", model, cfg, meta)
    return folder


@pytest.fixture(scope="module")
def exported(tiny_dataset, tmp_path_factory):
    """variant -> (run, export folder, metadata); 1.0 carries exit heads, so its export has stages."""
    root = tmp_path_factory.mktemp("export")
    out = {}
    for variant in ("1.0", "1.1", "1.2"):
        run = tiny_run(root / f"run{variant}", tiny_dataset, variant, EXITS if variant == "1.0" else ())
        out[variant] = (run, root / f"onnx{variant}", export_onnx(run, root / f"onnx{variant}"))
    return out


@pytest.fixture(scope="module")
def clips(tiny_dataset, tmp_path_factory):
    """Raw input files: one clip, and a batch file of clips of three lengths."""
    folder, ds = tmp_path_factory.mktemp("clips"), open_dataset(tiny_dataset)
    np.save(folder / "one.npy", ds.clip(0)[:, 0])  # (T, J, C)
    batch = np.zeros((3, 40, 25, 3), np.float32)
    for i, T in enumerate((40, 23, 9)):
        batch[i, :T] = ds.clip(i + 1)[:T, 0]
    np.savez(folder / "batch.npz", data=batch, lengths=np.array([40, 23, 9]))
    return [folder / "one.npy", folder / "batch.npz"]


@pytest.mark.parametrize("variant", ["1.0", "1.1", "1.2"])
def test_every_variant_exports_verified_with_dynamic_batch_and_frames(exported, variant):
    run, folder, metadata = exported[variant]
    check = metadata["verification"]
    assert 0 <= check["max_abs_logit_diff"] <= 1e-4 and check["tolerance"] == 1e-4
    shapes = [(case["batch"], case["frames"]) for case in check["cases"]]
    assert len({b for b, _ in shapes}) == len({t for _, t in shapes}) == 3 and (1, 32) in shapes  # 32: max_frames
    assert any(min(case["lengths"]) < case["frames"] for case in check["cases"])  # padded clips
    assert json.loads((folder / "model.json").read_text()) == metadata  # stored, as printed
    graph = onnx.load(str(folder / "classifier.onnx"))
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input}
    assert dims == {"x": ["batch", "frames", 25, 3], "lengths": ["batch"]}
    assert metadata["input"]["layout"]["joint_names"][0] == "SpineBase" and metadata["input"]["max_frames"] == 32
    assert metadata["class_names"] == load_classifier(run).class_names
    assert (metadata["cascade"] is not None) == (variant == "1.0")
    # A shape verification did not try: batch 2 at the longest clip.
    x, lengths = torch.randn(2, 32, 25, 3), torch.tensor([32, 17])
    torch_logits = load_classifier(run).backend.forward(x, padding_mask(lengths, 32))[0]
    onnx_logits = load_exported(folder).backend.forward(x, padding_mask(lengths, 32))[0]
    assert torch.allclose(torch_logits, onnx_logits, atol=1e-4)


def test_predict_with_the_onnx_backend_gives_the_torch_backends_results(exported, clips):
    run, folder, _ = exported["1.1"]
    ours, theirs = predict(run, clips), predict(folder, clips, backend="onnx")
    assert [r["input"] for r in ours] == [r["input"] for r in theirs] and len(ours) == 4
    assert np.allclose([r["logits"] for r in ours], [r["logits"] for r in theirs], atol=1e-4)
    assert [r["top"][0]["label"] for r in ours] == [r["top"][0]["label"] for r in theirs]
    cli = CliRunner().invoke(app, ["predict", str(folder), *map(str, clips), "--backend", "onnx", "--json"])
    assert cli.exit_code == 0, cli.output
    assert np.allclose([r["logits"] for r in json.loads(cli.output)], [r["logits"] for r in ours], atol=1e-4)
    with pytest.raises(UserError, match="model.json: not found"):
        predict(run, clips, backend="onnx")  # a run folder is not an export
    with pytest.raises(UserError, match="runs on the CPU"):
        predict(folder, clips, backend="onnx", device="cuda")


def test_the_stage_graphs_make_the_torch_cascades_decisions(exported, clips):
    run, folder, metadata = exported["1.0"]
    stages = metadata["cascade"]["stages"]
    assert [s["exit"] for s in stages] == ["t1", "t2_layer1", None]
    assert [list(s["inputs"]) for s in stages] == [["x", "lengths"], ["pretrained", "lengths"],
                                                   ["tokens", "lengths", "pretrained"]]
    torch_side, onnx_side = load_classifier(run), load_exported(folder)
    assert onnx_side.backend.exits == torch_side.backend.exits == list(EXITS)
    x, lengths = torch.randn(16, 32, 25, 3), torch.randint(1, 33, (16,))
    pad = padding_mask(lengths, 32)
    with torch.no_grad():
        never = torch_side.backend.cascade(x, pad, lambda *_: torch.zeros(16, dtype=torch.bool))
    first = exit_confidence(never.exits["t1"]).sort().values
    for rule, threshold in (("max_softmax", float(first[5:7].mean())), ("patience", 2.0)):
        a, b = cascade_forward(torch_side.backend, x, pad, threshold, rule), cascade_forward(
            onnx_side.backend, x, pad, threshold, rule)
        assert torch.equal(a[2], b[2]) and torch.allclose(a[0], b[0], atol=1e-4)
        assert torch.allclose(a[1], b[1], atol=1e-4, equal_nan=True)
        if rule == "max_softmax":  # the threshold lies between the 6th and 7th confidence: 10 leave at t1
            assert int((a[2] == 0).sum()) == 10
    everyone = cascade_forward(onnx_side.backend, x, pad, 0.0)  # all leave at the first exit
    assert (everyone[2] == 0).all() and everyone[1].isnan().all()
    ours = predict(run, clips, exit_threshold=0.5)
    theirs = predict(folder, clips, exit_threshold=0.5, backend="onnx")
    assert [r["exit"] for r in ours] == [r["exit"] for r in theirs]
    assert np.allclose([r["logits"] for r in ours], [r["logits"] for r in theirs], atol=1e-4)


def test_stages_hand_each_other_what_they_need(tiny_dataset):
    """Exits after every layer of a 2 + 2 layer model: every stage reads only state an earlier one
    made, and the last reads T1's output for the fusion."""
    from cascade_cli.export.graphs import STATE, stage_plan

    cfg = load_config(None, [*TINY, "model.t1_layers=2"])
    model = add_exits(build_classifier(cfg.model, 25, 3, 4), ("t1_layer1", "t1", "t2_layer1", "t2_layer2"))
    plan, state = stage_plan(model), {"x"}
    assert [(s.start, s.stop, s.exit) for s in plan] == [(0, 1, "t1_layer1"), (1, 2, "t1"), (2, 3, "t2_layer1"),
                                                          (3, 4, "t2_layer2"), (4, 4, None)]
    for stage in plan:
        assert set(stage.inputs) <= state and not set(stage.graph_inputs) & set(stage.outputs)
        state |= {STATE[name] for name in stage.outputs if name in STATE}
    assert plan[-1].inputs == ("tokens", "pretrained") and plan[-1].outputs == ("logits", "pooled")


def _lines(clip: np.ndarray) -> str:
    return "".join(json.dumps({"persons": frame.tolist()}) + "\n" for frame in clip)


def test_a_stream_through_the_onnx_backend_matches_torch(exported, tiny_dataset, tmp_path):
    run, folder, _ = exported["1.0"]
    text = _lines(open_dataset(tiny_dataset).clip(0)[:24])
    (tmp_path / "poses.jsonl").write_text(text)  # a file: every window, where stdin would skip while busy
    ours = list(classify_stream(stream_classifier(load_classifier(run)), text.splitlines(), window=8, stride=8))
    theirs = list(classify_stream(stream_classifier(load_exported(folder)), text.splitlines(), window=8, stride=8))
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs):
        assert [t["label"] for t in a["top"]] == [t["label"] for t in b["top"]]
        assert np.allclose([t["prob"] for t in a["top"]], [t["prob"] for t in b["top"]], atol=1e-5)
    cli = CliRunner().invoke(app, ["predict", str(folder), "--stream", str(tmp_path / "poses.jsonl"), "--window", "8",
                                   "--stride", "8", "--backend", "onnx", "--early-exit", "0.5"])
    assert cli.exit_code == 0, cli.output
    records = [json.loads(line) for line in cli.stdout.splitlines() if line.startswith("{\"window\"")]
    assert len(records) == 3 and all("exit" in r for r in records)


def _one_line_exit_2(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error:") and len(result.output.strip().splitlines()) == 1
    return result.output


def test_bad_inputs_are_one_line_and_leave_nothing(exported, tmp_path):
    run, folder, _ = exported["1.1"]
    runner = CliRunner()
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.yaml").write_text("seed: 1\n")
    out = tmp_path / "out"
    assert "unfinished" in _one_line_exit_2(runner.invoke(app, ["export", str(tmp_path / "unfinished"), "--format",
                                                                 "onnx", "--out", str(out)]))
    assert "--opset 99" in _one_line_exit_2(runner.invoke(app, ["export", str(run), "--format", "onnx", "--out",
                                                                 str(out), "--opset", "99"]))
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))
    before = sorted(p.name for p in folder.iterdir())
    assert "--overwrite" in _one_line_exit_2(runner.invoke(app, ["export", str(run), "--format", "onnx", "--out",
                                                                 str(folder)]))
    assert sorted(p.name for p in folder.iterdir()) == before


def test_a_failed_verification_keeps_the_old_export_and_writes_nothing(exported, tmp_path, monkeypatch):
    import cascade_cli.export.writer as writer

    run, _, _ = exported["1.1"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "model.json").write_text("{}")
    real = writer.verify
    monkeypatch.setattr(writer, "verify", lambda *a: {**real(*a), "max_abs_logit_diff": 0.5})
    with pytest.raises(UserError, match="differ from PyTorch's by up to 0.5"):
        export_onnx(run, tmp_path / "old", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["old"] and (tmp_path / "old" / "model.json").read_text() == "{}"


def test_without_the_extra_the_commands_name_it(exported, tmp_path, monkeypatch, clips):
    import cascade_cli.export.runtime as runtime

    run, folder, _ = exported["1.1"]
    real = runtime.importlib.util.find_spec
    monkeypatch.setattr(runtime.importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime"
                        else real(name, *a))
    runner = CliRunner()
    for args in (["export", str(run), "--format", "onnx", "--out", str(tmp_path / "x")],
                 ["predict", str(folder), str(clips[0]), "--backend", "onnx"]):
        assert "pip install 'cascade-cli[onnx]'" in _one_line_exit_2(runner.invoke(app, args))
    assert not (tmp_path / "x").exists()
