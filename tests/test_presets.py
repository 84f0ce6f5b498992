"""The paper-reproduction presets: they load, name their experiment, target the paper's numbers, build
the paper's models, and each ablation arm differs from its Table 1 recipe in exactly its own key."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import pytest
import torch
import yaml

from cascade_cli.config import PRESETS_DIR, list_presets, load_config, preset_info
from cascade_cli.data.registry import KNOWN_DATASETS, paper_preset
from cascade_cli.data.representation import output_shape
from cascade_cli.model import build_classifier

PAPER_TABLES = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "paper_tables.yaml"

# The registry's datasets with paper presets (Penn Action, N-UCLA, NTU60); tests/test_registry.py checks
# their layouts, class counts and protocols.
DATASETS = {name: dataset for name, dataset in KNOWN_DATASETS.items() if dataset.paper_presets}
PENN_LONGEST_CLIP = 663  # frames; Penn clips are 18-663 frames long (reference B.8)

TABLE1 = {paper_preset(name, protocol, arm): (name, protocol, arm)
          for name, dataset in DATASETS.items() for protocol in dataset.paper_presets
          for arm in ("1.0", "1.1", "1.2")}

# Total parameters (T1 without decoder + T2 + cross-attention + head), reference B.4.
PARAMETERS = {
    "table1/penn_action-1.0": 11_051_023, "table1/penn_action-1.1": 11_319_331,
    "table1/penn_action-1.2": 12_635_665,
    "table1/n_ucla-1.0": 11_326_730, "table1/n_ucla-1.1": 11_326_772, "table1/n_ucla-1.2": 12_643_597,
    "table1/ntu60_xsub-1.0": 180_739_900, "table1/ntu60_xsub-1.1": 180_739_942,
    "table1/ntu60_xsub-1.2": 191_800_828,
    "table1/ntu60_xview-1.0": 77_601_340, "table1/ntu60_xview-1.1": 77_601_382,
    "table1/ntu60_xview-1.2": 96_426_380,
}

PENN = "table1/penn_action-1.0"
# Ablation arm -> (its Table 1 base, the config keys in which it differs from that base).
ABLATIONS = {
    "table2/ntu60_xsub-1.0": ("table1/ntu60_xsub-1.0", set()),
    "table2/ntu60_xview-1.0": ("table1/ntu60_xview-1.0", set()),
    "table6/ntu60_xsub-1.0-pretrain1": ("table1/ntu60_xsub-1.0", {"pretrain.epochs"}),
    "table6/ntu60_xsub-1.0-pretrain100": ("table1/ntu60_xsub-1.0", set()),
    "table6/ntu60_xsub-1.0-pretrain200": ("table1/ntu60_xsub-1.0", {"pretrain.epochs"}),
    "table7/penn_action-1.0-joint_slots": (PENN, set()),
    "table7/penn_action-1.0-frames": (PENN, {"pretrain.mask"}),
    "table7/penn_action-1.0-none": (PENN, {"pretrain.mask"}),
    "table8/penn_action-1.0-joints": (PENN, set()),
    "table8/penn_action-1.0-bone_sub": (PENN, {"data.representation"}),
    "table8/penn_action-1.0-bone_concat": (PENN, {"data.representation"}),
    "table8/penn_action-1.0-bone_param": (PENN, {"data.representation"}),
    "table9/penn_action-1.0-linear": (PENN, set()),
    "table9/penn_action-1.0-mlp": (PENN, {"model.decoder"}),
    "table9/penn_action-1.0-mlp_residual": (PENN, {"model.decoder"}),
    "table10/penn_action-1.0-full": (PENN, set()),
    "table10/penn_action-1.0-frozen": (PENN, {"finetune.t1"}),
    "table10/penn_action-1.0-last_layer": (PENN, {"finetune.t1"}),
}
TABLE_PRESETS = sorted([*TABLE1, *ABLATIONS])
# Table -> (the config key its arms vary, the value an arm name stands for).
ARM_KEY = {"6": ("pretrain.epochs", int), "7": ("pretrain.mask", str), "8": ("data.representation", str),
           "9": ("model.decoder", str),
           "10": ("finetune.t1", {"full": "full", "frozen": "frozen", "last_layer": "last_k"}.__getitem__)}


# Presets are parsed once per test session: the tests only read them.
config = functools.lru_cache(maxsize=None)(load_config)
info_of = functools.lru_cache(maxsize=None)(preset_info)


def flat(cfg) -> dict:
    out = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        else:
            out[prefix[:-1]] = value

    walk("", dataclasses.asdict(cfg))
    return out


def test_every_deliverable_exists():
    names = set(list_presets())
    assert set(TABLE_PRESETS) <= names, sorted(set(TABLE_PRESETS) - names)
    stray = {n for n in names if n.startswith("table")} - set(TABLE_PRESETS)
    assert not stray, f"table presets not covered by tests/test_presets.py: {sorted(stray)}"


@pytest.mark.parametrize("name", list_presets())
def test_preset_loads(name):
    load_config(name)
    preset_info(name)


@pytest.mark.parametrize("name", TABLE_PRESETS)
def test_table_preset_info(name):
    info = info_of(name)
    for key in ("title", "table", "dataset", "arm", "paper_top1"):
        assert key in info, f"{name}: preset.{key} missing"
    assert name.startswith(f"table{info['table']}/") and name.endswith(info["arm"])
    assert info["dataset"] in DATASETS
    assert info["reproduces"] and info["differs"], f"{name}: say what it reproduces and where it differs"
    assert all(isinstance(s, str) and s for s in info["reproduces"] + info["differs"])
    assert (PRESETS_DIR / f"{name}.yaml").read_text().startswith("# "), f"{name}: start with a header comment"
    cfg = config(name)
    assert cfg.data.protocol in DATASETS[info["dataset"]].protocols
    assert not cfg.data.path, "presets must not point at a dataset directory"
    assert cfg.finetune.select == "val", "never select on test: finetuning selects on validation"
    assert cfg.data.val_fraction > 0


@functools.lru_cache(maxsize=None)
def paper_tables() -> dict:
    return yaml.safe_load(PAPER_TABLES.read_text())


def paper_top1(tables: dict, name: str, info: dict, cfg) -> float:
    table, arm = info["table"], info["arm"]
    ntu_key = {"xsub": "ntu60_cs", "xview": "ntu60_cv"}.get(cfg.data.protocol)
    if table == "1":
        return tables["table1"][ntu_key or {"penn_action": "penn_action", "nw_ucla": "n_ucla"}[info["dataset"]]][arm]
    if table == "2":
        return tables["table2"][ntu_key]["overall"]
    if table == "6":
        return tables["table6"]["pretrain_epochs"][int(arm)]
    row = {"7": {"joint_slots": "joint_masking", "frames": "frame_masking", "none": "no_masking"},
           "8": {"joints": "joints", "bone_sub": "bones_subtraction", "bone_concat": "bones_concatenation",
                 "bone_param": "bones_parameterization"},
           "9": {"linear": "linear", "mlp": "mlp", "mlp_residual": "mlp_residual"},
           "10": {"full": "full_finetune", "frozen": "full_freeze", "last_layer": "last_layer_finetune"}}[table][arm]
    return tables[f"table{table}"][row]


@pytest.mark.parametrize("name", TABLE_PRESETS)
def test_paper_top1_matches_paper_tables(name):
    if not PAPER_TABLES.is_file():
        pytest.skip(f"paper tables not found at {PAPER_TABLES} (the shared reference folder is absent)")
    info = info_of(name)
    assert info["paper_top1"] == paper_top1(paper_tables(), name, info, config(name))


@pytest.mark.parametrize("name", sorted(TABLE1))
def test_table1_recipe(name):
    dataset, protocol, arm = TABLE1[name]
    info, cfg = info_of(name), config(name)
    assert (info["table"], info["dataset"], info["arm"]) == ("1", dataset, arm)
    assert cfg.data.protocol == protocol
    assert cfg.model.variant == arm
    # The positional parameter must cover every clip the model sees.
    longest = cfg.data.frames or (PENN_LONGEST_CLIP if dataset == "penn_action" else None)
    assert longest is not None, f"{name}: variable-length clips only for Penn, whose longest is known"
    assert cfg.model.max_frames >= longest
    if dataset == "ntu60":
        assert cfg.data.person == "abs_sum", "the paper numbers need the official person rule"
        assert (cfg.model.fusion, cfg.model.head, cfg.finetune.label_smoothing) == ("ffn", "mlp", 0.05)
    else:
        assert (cfg.model.fusion, cfg.model.head, cfg.finetune.label_smoothing) == ("plain", "linear", 0.0)


def count_parameters(name: str) -> int:
    info, cfg = info_of(name), config(name)
    dataset = DATASETS[info["dataset"]]
    layout = dataset.layout
    J, C = output_shape(cfg.data.representation, layout.num_joints, len(layout.bones), layout.coords)
    with torch.device("meta"):
        model = build_classifier(cfg.model, J, C, dataset.num_classes)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(TABLE1))
def test_table1_model_builds_with_the_official_size(name):
    assert count_parameters(name) == PARAMETERS[name]


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_model_builds(name):
    assert count_parameters(name) > 0


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_differs_only_in_its_key(name):
    base, keys = ABLATIONS[name]
    assert yaml.safe_load((PRESETS_DIR / f"{name}.yaml").read_text())["base"] == base
    arm, recipe = flat(config(name)), flat(config(base))
    assert {k for k in arm if arm[k] != recipe[k]} == keys
    info = info_of(name)
    assert info["dataset"] == info_of(base)["dataset"]
    if info["table"] in ARM_KEY:  # the arm's own key holds the value its name says
        key, value_of = ARM_KEY[info["table"]]
        assert arm[key] == value_of(info["arm"])
    if info["table"] == "6":
        assert arm["finetune.epochs"] == 100
    if info["arm"] == "last_layer":
        assert arm["finetune.t1_trainable_layers"] == 1
