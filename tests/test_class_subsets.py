"""Training on a subset of a dataset's classes (`data.classes`, `data.exclude_classes`): what the
open-set protocol relies on, namely that held-out classes never reach training, model selection or
the closed-set evaluation of the model."""

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import cascade_cli.ablate as ablate
import cascade_cli.training as train
import cascade_cli.training.loop as loop
from cascade_cli.checkpoint import load_checkpoint
from cascade_cli.cli import app
from cascade_cli.config import config_from_dict, dump_yaml, load_config, to_dict
from cascade_cli.data.format import open_dataset
from cascade_cli.data.splits import protocol_splits, run_splits, stratified_split
from cascade_cli.errors import UserError
from cascade_cli.progress import Reporter
from tests.conftest import TINY

QUIET = Reporter(quiet=True)
EXCLUDED = ("walk", "jump")


def tiny_config(data, *extra):
    return load_config(None, [*TINY, *extra], base={"data": {"path": str(data)}})


def protocol_clips_of(ds, part, classes):
    indices = ds.split_indices("xsub", part)
    return indices[np.isin(ds.labels[indices], classes)]


@pytest.fixture(scope="module")
def subset_run(tiny_dataset, tmp_path_factory):
    """A pretraining and a finetuning run without EXCLUDED, both selecting on validation, and every
    index list the training loop built a ClipDataset from."""
    seen: list[np.ndarray] = []
    real = loop.ClipDataset

    def recording(ds, indices, *args, **kwargs):
        seen.append(np.asarray(indices))
        return real(ds, indices, *args, **kwargs)

    runs = tmp_path_factory.mktemp("subset")
    cfg = tiny_config(tiny_dataset, "pretrain.epochs=1", "pretrain.select=val",
                      f"data.exclude_classes={','.join(EXCLUDED)}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "ClipDataset", recording)
        train.pretrain(cfg, runs / "pre", QUIET)
        cfg.finetune.pretrained = str(runs / "pre")
        train.finetune(cfg, runs / "ft", QUIET)
    return runs, set(np.concatenate(seen).tolist())


def test_training_and_validation_never_load_an_excluded_class(tiny_dataset, subset_run):
    runs, used = subset_run
    ds = open_dataset(tiny_dataset)
    excluded = [ds.class_names.index(name) for name in EXCLUDED]
    included = [c for c in range(ds.num_classes) if c not in excluded]
    train_split = ds.split_indices("xsub", "train")
    assert np.isin(ds.labels[train_split], excluded).any()  # there was something to leave out
    assert used == set(protocol_clips_of(ds, "train", included).tolist())
    assert not np.isin(ds.labels[sorted(used)], excluded).any()
    for stage in ("pre", "ft"):
        meta = load_checkpoint(runs / stage / "checkpoints" / "best.safetensors").meta
        assert meta["trained_classes"] == [ds.class_names[c] for c in included]
        assert meta["class_names"] == ds.class_names  # the head keeps an output per dataset class


def evaluate_report(run, out, *options):
    """`cascade evaluate` as a user runs it; its JSON report."""
    result = CliRunner().invoke(app, ["evaluate", str(run), "--out", str(out), "--quiet", *options])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_evaluate_scores_only_the_classes_a_model_was_trained_on(tiny_dataset, subset_run, tmp_path):
    runs, _ = subset_run
    ds = open_dataset(tiny_dataset)
    splits = run_splits(tiny_config(tiny_dataset, f"data.exclude_classes={','.join(EXCLUDED)}"))
    report = evaluate_report(runs / "ft", tmp_path / "test.json", "--save-scores")
    assert report["clips"] == len(splits.test) < len(ds.split_indices("xsub", "test"))
    with np.load(report["scores_path"], allow_pickle=False) as saved:
        assert set(saved["labels"].tolist()) == set(splits.classes)
        assert saved["logits"].shape[1] == ds.num_classes
    for split in ("val", "train"):
        report = evaluate_report(runs / "ft", tmp_path / f"{split}.json", "--split", split)
        assert report["clips"] == len(splits.indices(split))


def test_validation_of_a_subset_is_carved_from_the_subset_s_training_clips(tiny_dataset):
    ds = open_dataset(tiny_dataset)
    splits = run_splits(tiny_config(tiny_dataset, f"data.exclude_classes={','.join(EXCLUDED)}", "seed=5"))
    kept = protocol_clips_of(ds, "train", splits.classes)
    train_part, val_part = stratified_split(ds.labels, kept, 0.2, 5)
    np.testing.assert_array_equal(splits.val, val_part)
    np.testing.assert_array_equal(splits.train, train_part)
    np.testing.assert_array_equal(splits.test, protocol_clips_of(ds, "test", splits.classes))
    assert splits.class_names() == [n for n in ds.class_names if n not in EXCLUDED]


def test_classes_by_name_and_by_index_give_the_same_splits(tiny_dataset):
    ds = open_dataset(tiny_dataset)
    by_name = run_splits(tiny_config(tiny_dataset, "data.classes=wave,clap,kick"))
    by_index = run_splits(tiny_config(tiny_dataset, "data.classes=0,2,5"))
    mixed = run_splits(tiny_config(tiny_dataset, "data.classes=[5, wave, '2']"))
    as_exclusion = run_splits(tiny_config(tiny_dataset, "data.exclude_classes=1,3,4,6,7,8,9"))
    assert [ds.class_names[c] for c in by_name.classes] == ["wave", "clap", "kick"]
    for other in (by_index, mixed, as_exclusion):
        assert other.classes == by_name.classes
        for part in ("train", "val", "test"):
            np.testing.assert_array_equal(other.indices(part), by_name.indices(part))
    assert set(ds.labels[by_name.train].tolist()) == {0, 2, 5} and len(by_name.val) > 0


def test_no_subset_keeps_every_class_and_the_splits_of_before(tiny_dataset):
    ds = open_dataset(tiny_dataset)
    cfg = tiny_config(tiny_dataset)
    splits = run_splits(cfg)
    assert splits.classes == tuple(range(ds.num_classes))
    before = protocol_splits(ds, "xsub", cfg.data.val_fraction, cfg.seed)
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(splits.indices(part), before.indices(part))
    np.testing.assert_array_equal(splits.train, np.setdiff1d(ds.split_indices("xsub", "train"), splits.val))


def test_lists_from_set_and_from_a_preset(tmp_path):
    assert load_config(None, ["data.exclude_classes=a,b"]).data.exclude_classes == ["a", "b"]
    assert load_config(None, ["data.classes= walk , turn around "]).data.classes == ["walk", "turn around"]
    assert load_config(None, ["data.classes=7"]).data.classes == ["7"]
    preset = tmp_path / "subset.yaml"
    preset.write_text("data:\n  classes: [wave, 3, 'jump']\n  exclude_classes:\n    - 0\n")
    cfg = load_config(str(preset))
    assert cfg.data.classes == ["wave", "3", "jump"] and cfg.data.exclude_classes == ["0"]
    assert config_from_dict(yaml.safe_load(dump_yaml(cfg))) == cfg  # a run's config.yaml reads back the same
    for empty in ("", "[]", " "):
        assert load_config(str(preset), [f"data.classes={empty}"]).data.classes == []
    (tmp_path / "empty.yaml").write_text("data:\n  classes: []\n  exclude_classes:\n")
    assert load_config(str(tmp_path / "empty.yaml")).data == load_config(None).data
    assert load_config(None).data.classes == [] and load_config(None).data.exclude_classes == []


@pytest.mark.parametrize("overrides, fragments", [
    (["data.exclude_classes=wlak"], ["config key 'data.exclude_classes': 'wlak' is neither a class name"]),
    (["data.classes=wave,10"], ["config key 'data.classes': '10' is neither a class name nor an index 0-9"]),
    (["data.classes=wave,-1"], ["config key 'data.classes': '-1'"]),
    (["data.classes=wave"], ["config key 'data.classes': the subset leaves 1 class(es) (wave)"]),
    (["data.exclude_classes=0,1,2,3,4,5,6,7,8"], ["config key 'data.exclude_classes': the subset leaves 1",
                                                  "(handshake)"]),
    (["data.classes=wave,clap", "data.exclude_classes=clap,wave"],
     ["config keys 'data.classes' and 'data.exclude_classes': the subset leaves 0 class(es) (none)"]),
])
def test_bad_subsets_are_one_line_naming_the_key_before_any_run_dir(tiny_dataset, tmp_path, overrides, fragments):
    with pytest.raises(UserError) as info:
        train.pretrain(tiny_config(tiny_dataset, *overrides), tmp_path / "pre", QUIET)
    message = str(info.value)
    assert all(fragment in message for fragment in fragments), message
    assert "wave, arm_raise, clap, squat, jump, kick, bow, turn_around, walk, handshake" in message
    assert "\n" not in message
    assert not (tmp_path / "pre").exists()


def test_ablation_arms_share_a_pretraining_only_with_the_same_subset(monkeypatch):
    full, subset = load_config("demo"), load_config("demo", ["data.exclude_classes=walk"])
    assert ablate._pretrain_key(subset) != ablate._pretrain_key(full)
    key = ablate._pretrain_key(full)

    def as_before_the_keys_existed(cfg):
        data = to_dict(cfg)
        if "data" in data:  # not for the model section, which _pretrain_key also reads
            del data["data"]["classes"], data["data"]["exclude_classes"]
        return data

    # Studies made before the keys existed keep their shared pretraining runs.
    monkeypatch.setattr(ablate, "to_dict", as_before_the_keys_existed)
    assert ablate._pretrain_key(full) == key
