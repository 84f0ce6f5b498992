import pytest
import yaml

from cascade_cli.config import Config, config_from_dict, dump_yaml, load_config, parse_override, resolve_preset
from cascade_cli.errors import UserError


def test_overrides_are_typed_and_nested():
    cfg = load_config(None, ["finetune.optim.lr=1e-4", "model.variant=1.2", "model.d_model=800",
                             "finetune.optim.nesterov=true", "data.protocol=xsub", "seed=7"])
    assert cfg.finetune.optim.lr == pytest.approx(1e-4) and isinstance(cfg.finetune.optim.lr, float)
    assert cfg.model.variant == "1.2"
    assert cfg.model.d_model == 800
    assert cfg.finetune.optim.nesterov is True
    assert cfg.data.protocol == "xsub"
    assert cfg.seed == 7
    # YAML 1.1 reads a bare `off` as false; it still means the choice "off".
    assert load_config(None, ["amp=off"]).amp == "off"
    # Integers are accepted where floats are expected and stored as floats.
    assert load_config(None, ["pretrain.optim.lr=1"]).pretrain.optim.lr == 1.0


def test_later_overrides_win_and_preset_applies():
    cfg = load_config("demo", ["model.d_model=48", "model.d_model=96"])
    assert cfg.model.d_model == 96
    preset = yaml.safe_load(resolve_preset("demo").read_text())
    assert cfg.pretrain.epochs == preset["pretrain"]["epochs"]


@pytest.mark.parametrize("override, fragment", [
    ("model.dmodel=64", "unknown config key 'model.dmodel'"),
    ("modle.d_model=64", "unknown config key 'modle'"),
    ("model.d_model=abc", "config key 'model.d_model': expected an integer"),
    ("model.d_model=1.5", "config key 'model.d_model': expected an integer"),
    ("model.variant=2.0", "config key 'model.variant': 2.0 is not allowed; use one of 1.0, 1.1, 1.2"),
    ("pretrain.mask=random", "use one of joint_slots, joints, frames, none"),
    ("amp=on", "config key 'amp': 'on' is not allowed; use one of auto, off, bf16, fp16"),
    ("pretrain.mask_ratio=1.5", "config key 'pretrain.mask_ratio': 1.5 is out of range (0.0, 1.0]"),
    ("pretrain.mask_ratio=0", "out of range"),
    ("finetune.optim.nesterov=maybe", "expected true or false"),
    ("model=3", "config key 'model': expected a mapping"),
    ("seed", "expected KEY=VALUE"),
    ("model..d_model=3", "dotted names"),
    # List keys (data.classes, data.exclude_classes; tests/test_class_subsets.py has the rest).
    ("data.classes=a,,b", "config key 'data.classes': 'a,,b' has an empty entry"),
    ("data.exclude_classes=1.5", "config key 'data.exclude_classes': 1.5 is not a name or an integer index"),
    ("data.classes=[true]", "config key 'data.classes': True is not a name or an integer index"),
])
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(UserError) as info:
        load_config(None, [override])
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_round_trip_through_yaml():
    cfg = load_config(None, ["model.variant=1.1", "finetune.t1=last_k", "finetune.t1_trainable_layers=2"])
    again = config_from_dict(yaml.safe_load(dump_yaml(cfg)))
    assert again == cfg
    assert config_from_dict({}) == Config()


def test_bad_preset_file_reports_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  d_model: big\n")
    with pytest.raises(UserError) as info:
        load_config(str(bad))
    assert str(bad) in str(info.value) and "model.d_model" in str(info.value)
    with pytest.raises(UserError, match="preset 'nope' not found; available: .*demo"):
        load_config("nope")


def test_parse_override_values():
    assert parse_override("a.b=3") == {"a": {"b": 3}}
    assert parse_override("a=1e-5") == {"a": 1e-5}
    assert parse_override("a=hello") == {"a": "hello"}
