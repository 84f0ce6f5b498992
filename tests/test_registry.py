"""The dataset registry: its facts are what the converters write, match the official numbering and the paper
presets, and reading them imports no converter."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from cascade_cli.config import list_presets, load_config, preset_info
from cascade_cli.data import ntu
from cascade_cli.data.format import open_dataset
from cascade_cli.data.nucla import prepare_nucla
from cascade_cli.data.penn import prepare_penn
from cascade_cli.data.registry import (KNOWN_DATASETS, NTU60, NTU120, NW_UCLA, PENN_ACTION, SYNTHETIC, KnownDataset,
                                       known_dataset, paper_preset, paper_preset_stem, two_person_classes)
from cascade_cli.data.synthetic import ACTIONS, make_synthetic
from cascade_cli.errors import UserError
from tests.test_ntu import write_clips
from tests.test_nucla import write_clip_json
from tests.test_penn import write_mat

REPO = Path(__file__).resolve().parents[1]

# name -> (joints, coordinates, persons, classes, protocols, per-joint confidence), from the datasets' papers
# and the reference data_formats.md; written out here so that a wrong registry entry cannot pass.
EXPECTED = {
    "ntu60": (25, 3, 2, 60, {"xsub", "xview"}, False),
    "ntu120": (25, 3, 2, 120, {"xsub", "xset"}, False),
    "penn_action": (13, 2, 1, 15, {"official"}, True),
    "nw_ucla": (20, 3, 1, 10, {"cross_view"}, False),
    "synthetic": (25, 3, 2, 10, {"xsub"}, False),
}
TABLE1_STEMS = {("penn_action", "official"): "penn_action", ("nw_ucla", "cross_view"): "n_ucla",
                ("ntu60", "xsub"): "ntu60_xsub", ("ntu60", "xview"): "ntu60_xview"}
VARIANTS = ("1.0", "1.1", "1.2")


def test_entries_hold_the_expected_facts():
    assert set(KNOWN_DATASETS) == set(EXPECTED)
    for name, (joints, coords, persons, classes, protocols, confidence) in EXPECTED.items():
        dataset = known_dataset(name)
        assert dataset.name == name and dataset.title
        assert (dataset.layout.num_joints, dataset.layout.coords, dataset.persons) == (joints, coords, persons), name
        assert dataset.num_classes == len(dataset.class_names) == classes, name
        assert set(dataset.protocols) == protocols and all(dataset.protocols.values()), name
        assert dataset.confidence is confidence, name


# ----------------------------------------------------------------------------------------------
# The converters write the registry's facts


def prepare_tiny_ntu(version: str, tmp_path: Path) -> Path:
    write_clips(tmp_path / "raw", ["S001C001P001R001A001", "S001C002P002R001A049"])
    ntu.prepare_ntu(tmp_path / "raw", tmp_path / "out", version, workers=1)
    return tmp_path / "out"


def prepare_tiny_penn(tmp_path: Path) -> Path:
    (tmp_path / "labels").mkdir()
    write_mat(tmp_path / "labels" / "0001.mat")
    prepare_penn(tmp_path / "labels", tmp_path / "out", workers=1)
    return tmp_path / "out"


def prepare_tiny_nucla(joint_order: str, tmp_path: Path) -> Path:
    (tmp_path / "all_sqe").mkdir()
    write_clip_json(tmp_path / "all_sqe", "a01_s01_e01_v01", label=1)
    prepare_nucla(tmp_path, tmp_path / "out", joint_order=joint_order, workers=1)
    return tmp_path / "out"


# (registry name, joint order or None) -> writes a tiny prepared dataset under tmp_path and returns it
CONVERTERS = {
    ("ntu60", None): lambda tmp_path: prepare_tiny_ntu("ntu60", tmp_path),
    ("ntu120", None): lambda tmp_path: prepare_tiny_ntu("ntu120", tmp_path),
    ("penn_action", None): prepare_tiny_penn,
    ("nw_ucla", "kinect"): lambda tmp_path: prepare_tiny_nucla("kinect", tmp_path),
    ("nw_ucla", "official"): lambda tmp_path: prepare_tiny_nucla("official", tmp_path),
    ("synthetic", None): lambda tmp_path: make_synthetic(tmp_path / "out", clips_per_class=1),
}


def test_every_entry_and_joint_order_has_a_converter_check():
    assert {name for name, _ in CONVERTERS} == set(KNOWN_DATASETS)
    for name, dataset in KNOWN_DATASETS.items():
        orders = {order for known, order in CONVERTERS if known == name and order is not None}
        assert orders == set(dataset.joint_orders), name


@pytest.mark.parametrize("name, joint_order", sorted(CONVERTERS, key=str), ids=str)
def test_converter_writes_the_registry_facts(tmp_path, name, joint_order):
    prepared = open_dataset(CONVERTERS[name, joint_order](tmp_path))
    dataset = known_dataset(name)
    layout = dataset.joint_order(joint_order).layout if joint_order else dataset.layout
    assert prepared.name == dataset.name
    assert prepared.class_names == list(dataset.class_names)
    assert prepared.layout == layout and prepared.persons == dataset.persons
    assert prepared.has_confidence == dataset.confidence
    assert {protocol: spec["description"] for protocol, spec in prepared.protocols.items()} == dict(dataset.protocols)


def test_synthetic_animates_exactly_the_registered_classes():
    assert set(ACTIONS) == set(SYNTHETIC.class_names)


def test_nucla_joint_orders():
    assert NW_UCLA.joint_order("kinect").layout == NW_UCLA.layout
    assert NW_UCLA.joint_order("kinect").source == tuple(range(20))
    official = NW_UCLA.joint_order("official")
    assert official.layout.name == "kinect_v1_20_official"
    assert official.layout.joint_names == tuple(NW_UCLA.layout.joint_names[j] for j in official.source)


def test_ntu_descriptions_state_the_converters_numbers():
    """The descriptions are text; the converter holds the performer list and the ranges they summarise."""
    for version in ("ntu60", "ntu120"):
        described = known_dataset(version).protocols
        assert f"the {len(ntu.TRAIN_SUBJECTS[version])} training performers" in described["xsub"]
        assert f"of 1-{ntu.MAX_SUBJECT[version]} test" in described["xsub"]
        assert set(described) == set(ntu.EXPORTS[version])  # one CTR export per protocol
    assert f"(1-{ntu.MAX_SETUP['ntu120']})" in NTU120.protocols["xset"]


# ----------------------------------------------------------------------------------------------
# NTU numbering and two-person classes


def test_ntu120_extends_ntu60():
    assert NTU120.class_names[:60] == NTU60.class_names and NTU120.num_classes == 120
    assert (NTU60.class_names[0], NTU60.class_names[59]) == ("drink water", "walking apart from each other")
    assert (NTU120.class_names[60], NTU120.class_names[119]) == (
        "put on headphone", "finger-guessing game (playing rock-paper-scissors)")
    assert NTU120.two_person_classes[:len(NTU60.two_person_classes)] == NTU60.two_person_classes


def test_two_person_classes():
    a50_a60 = [action - 1 for action in range(50, 61)]
    a106_a120 = [action - 1 for action in range(106, 121)]
    assert two_person_classes("ntu60", 60) == a50_a60
    assert two_person_classes("ntu120", 120) == a50_a60 + a106_a120
    # Every class that names another person is one of them.
    mentions_another = {label for label, name in enumerate(NTU120.class_names)
                        if "other person" in name or "each other" in name}
    assert len(mentions_another) == 20 and mentions_another <= set(two_person_classes("ntu120", 120))
    for name, classes in (("ntu60", 120), ("ntu120", 60), ("penn_action", 15), ("nw_ucla", 10), ("synthetic", 10),
                          ("my_ntu_subset", 60)):
        assert two_person_classes(name, classes) is None, name


def test_ntu_converter_warns_by_the_two_person_classes(tmp_path):
    write_clips(tmp_path, ["S001C001P001R001A049", "S001C001P001R001A050"])  # one person each
    warning = "denoising kept 1 actor(s) for a 2-person action"
    assert warning not in ntu.parse_ntu_file(str(tmp_path / "S001C001P001R001A049.skeleton")).warnings
    assert warning in ntu.parse_ntu_file(str(tmp_path / "S001C001P001R001A050.skeleton")).warnings


# ----------------------------------------------------------------------------------------------
# Paper presets


def test_table1_stems_name_existing_presets():
    registered = {(name, protocol): stem for name, dataset in KNOWN_DATASETS.items()
                  for protocol, stem in dataset.paper_presets.items()}
    assert registered == TABLE1_STEMS
    presets = set(list_presets())
    for (name, protocol), stem in TABLE1_STEMS.items():
        assert paper_preset_stem(name, protocol) == stem
        for variant in VARIANTS:
            preset = paper_preset(name, protocol, variant)
            assert preset == f"table1/{stem}-{variant}" and preset in presets
            assert preset_info(preset)["dataset"] == name and load_config(preset).data.protocol == protocol
    for name, protocol in (("ntu60", "xset"), ("ntu120", "xsub"), ("synthetic", "xsub"), ("kinetics400", "xsub")):
        assert paper_preset_stem(name, protocol) is None and paper_preset(name, protocol, "1.0") is None


def test_official_release_reads_the_registry():
    from cascade_cli.official.release import DATASETS

    presets = set(list_presets())
    for key, release in DATASETS.items():
        assert release.class_names == known_dataset(release.name).class_names
        assert all(release.preset(variant) in presets for variant in VARIANTS), key
    assert DATASETS["nw_ucla"].layout == NW_UCLA.joint_order("official").layout
    assert DATASETS["penn_action"].layout == PENN_ACTION.layout and DATASETS["ntu60_xsub"].layout == NTU60.layout


# ----------------------------------------------------------------------------------------------
# Lookups, read-only facts, light imports


def test_unknown_names_are_user_errors():
    with pytest.raises(UserError, match="unknown dataset 'kinetics400'; known datasets: "
                                        "ntu120, ntu60, nw_ucla, penn_action, synthetic$"):
        known_dataset("kinetics400")
    with pytest.raises(UserError, match="unknown joint order 'skateformer' for nw_ucla; "
                                        "known joint orders: kinect, official$"):
        NW_UCLA.joint_order("skateformer")
    with pytest.raises(UserError, match="for penn_action; known joint orders: none$"):
        PENN_ACTION.joint_order("kinect")


def test_facts_are_read_only_and_checked():
    with pytest.raises(dataclasses.FrozenInstanceError):
        NTU60.persons = 3
    with pytest.raises(TypeError):
        NTU60.protocols["xsub"] = "changed"
    with pytest.raises(TypeError):
        NW_UCLA.paper_presets["cross_view"] = "changed"
    facts = dict(name="tiny", title="tiny", layout=PENN_ACTION.layout, persons=1, class_names=("a", "b"),
                 protocols={"all": "every clip"}, confidence=False)
    KnownDataset(**facts)
    for wrong, message in ((dict(class_names=("a", "a")), "not unique"),
                           (dict(paper_presets={"xsub": "tiny"}), "unknown protocols"),
                           (dict(two_person_classes=(2,)), "outside 0..1")):
        with pytest.raises(ValueError, match=message):
            KnownDataset(**{**facts, **wrong})


def test_reading_the_registry_imports_no_converter():
    converters = ("cascade_cli.data.ntu", "cascade_cli.data.penn", "cascade_cli.data.nucla",
                  "cascade_cli.data.synthetic", "cascade_cli.data.prepare")
    code = ("import sys, cascade_cli.data.registry; print(' '.join(sys.modules)); "
            "import cascade_cli.official.convert; print(' '.join(sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    after_registry, after_official = (set(line.split()) for line in result.stdout.splitlines())
    assert "cascade_cli.data.registry" in after_registry and "cascade_cli.official.convert" in after_official
    assert not after_registry & {*converters, "numpy", "scipy", "torch"}
    assert not after_official & set(converters)
