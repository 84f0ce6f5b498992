"""The typed run configuration: one schema, loaded from YAML presets plus ``--set`` overrides.

Every knob of the toolkit lives here so that a run directory's ``config.yaml`` is the whole
truth about how the run was made. Validation happens once, at load time, and every error names
the dotted key and what it accepts, because a typo in a 10-hour run's config should cost
seconds, not the run.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from cascade_cli.errors import UserError, read_yaml_mapping

PRESETS_DIR = Path(__file__).resolve().parent / "presets"


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> dict:
    return {"range": (lo, hi, lo_open)}


@dataclass
class DataConfig:
    # Prepared dataset directory (see cascade_cli/data/format.py); `--data` sets it.
    path: str = ""
    # Which protocol of the dataset's manifest to use (e.g. xsub, xview, cross_view).
    protocol: str = ""
    # Batches of similar clip length (less padding, same results: padding is masked), and a cap on
    # the frames of a training batch (clips x longest clip) instead of a fixed clip count; 0 = no
    # cap. -1 = auto: on CPU, for clips of their own length (frames: 0), batch_size x the mean
    # training clip length, so an epoch keeps its steps and its mean batch while long clips go in
    # smaller batches that stay in the caches (1.5x the samples/s of a Penn Action epoch); else no cap.
    bucketing: bool = True
    max_frames_per_batch: int = field(default=-1, metadata=_range(-1))
    # Train, validate and evaluate only these classes, by name or 0-based index; empty: all classes.
    # The head keeps one output per dataset class; the others simply never occur as targets.
    classes: list[str] = field(default_factory=list)
    # Leave these classes (by name or index) out of training, validation and evaluation, e.g. the
    # actions an open-set protocol keeps unseen; applied after `classes`.
    exclude_classes: list[str] = field(default_factory=list)
    # Share of each class of the training split held out for model selection.
    val_fraction: float = field(default=0.1, metadata=_range(0.0, 0.5))
    # Frames per clip fed to the model; 0 keeps each clip's own length (padded per batch).
    frames: int = field(default=64, metadata=_range(0))
    # How a clip becomes `frames` frames: linear interpolation of a crop (CTR-GCN style),
    # or sorted random indices (train) / evenly spaced indices (eval).
    sampling: Literal["resize", "indices"] = "resize"
    # Training crops keep a random share of the valid frames in [crop_min, 1]; eval keeps eval_crop.
    crop_min: float = field(default=0.5, metadata=_range(0.0, 1.0, lo_open=True))
    eval_crop: float = field(default=0.95, metadata=_range(0.0, 1.0, lo_open=True))
    # Which person of a multi-person clip the model sees: the paper's "greatest motion variance",
    # the official code's "largest sum of absolute coordinates", always the first, or "both":
    # every person, side by side along the joint axis (the model then sees persons x joints).
    person: Literal["motion_variance", "abs_sum", "first", "both"] = "motion_variance"
    # Joints whose confidence (Penn: visibility) is <= min_confidence: zeroed, as the official Penn
    # code does, or kept. Datasets without confidence are unaffected.
    invisible: Literal["zero", "keep"] = "zero"
    min_confidence: float = field(default=0.0, metadata=_range(0.0, 1.0))
    # Joint subtracted from every frame (its position in the first frame); -1 for none; -2 for the
    # layout's centre joint (`center` of a layout file), whatever the joint order.
    center_joint: int = field(default=-1, metadata=_range(-2))
    # Random rotation about each of rotate_axes, uniform in [-rotate, rotate] radians; training only.
    rotate: float = field(default=0.0, metadata=_range(0.0))
    rotate_axes: Literal["xyz", "xy"] = "xyz"
    # Random isotropic scale in [1 - scale, 1 + scale]; training only.
    scale: float = field(default=0.0, metadata=_range(0.0, 0.9))
    # Random shear of 2-D clips (image keypoints), x += a*y and y += b*x about the seen joints' mean,
    # a and b uniform in [-shear, shear], one draw per clip; missing (zero) joints stay zero. Training only.
    shear: float = field(default=0.0, metadata=_range(0.0, 1.0))
    # Mirror a training clip with this probability: x reflected about the mean x of its seen joints,
    # left and right joints swapped by name (the layout's). eval_flip adds the mirror of every
    # evaluation view and averages the logits of both (test-time flip).
    flip: float = field(default=0.0, metadata=_range(0.0, 1.0))
    eval_flip: bool = False
    # Coordinate normalisation: none; per-axis min-max of the clip to [-1, 1] (official N-UCLA);
    # image size to [-1, 1] (needs per-clip width/height, as Penn Action has).
    normalize: Literal["none", "minmax", "image"] = "none"
    # Training-only dropping (official N-UCLA): with this probability zero one random axis in the
    # whole clip / zero 4-12 random joints in 16-32 random frames.
    axis_drop: float = field(default=0.0, metadata=_range(0.0, 1.0))
    joint_drop: float = field(default=0.0, metadata=_range(0.0, 1.0))
    # Items per training epoch = repeat x clips, each with its own random augmentation.
    repeat: int = field(default=1, metadata=_range(1))
    # Reproduce the official N-UCLA quirk: every copy keeps one augmentation for the whole run
    # instead of drawing a fresh one each epoch.
    frozen_augmentation: bool = False
    # What the model sees per frame (paper Table 8): joint positions; bone vectors child - parent;
    # both ends of every bone as two pseudo-joints; or each bone's slope and intercept. Also the
    # motion streams of multi-stream ensembles: joint or bone (bone_sub) differences of consecutive frames.
    representation: Literal["joints", "bone_sub", "bone_concat", "bone_param", "joint_motion", "bone_motion"] = "joints"
    # bone_param divides by dx: "sign" keeps the slope's sign (|dx| >= 1e-6); "official" clamps dx
    # to >= 1e-6 like the official code, which flips every bone pointing in -x (Table 8 quirk).
    bone_param_clamp: Literal["sign", "official"] = "sign"


@dataclass
class ModelConfig:
    # Feature extractor: 1.0 frame linear, 1.1 joint Conv1d + linear, 1.2 spatial transformer.
    variant: Literal["1.0", "1.1", "1.2"] = "1.0"
    # CascadeFormer 1.2 only. "paper" (official NTU code): per-joint width d/J concatenated into
    # the frame token. "code" (official Penn/N-UCLA code): per-joint width d, projected back to C,
    # then the frame linear.
    spatial_form: Literal["paper", "code"] = "paper"
    d_model: int = field(default=256, metadata=_range(1))
    t1_layers: int = field(default=4, metadata=_range(1))
    t1_heads: int = field(default=8, metadata=_range(1))
    # Feed-forward width of every encoder layer; 2048 is the PyTorch default the official weights use.
    ffn_dim: int = field(default=2048, metadata=_range(1))
    dropout: float = field(default=0.1, metadata=_range(0.0, 1.0))
    # Heads of the 1.2 spatial transformer; 0 means "same as t1_heads".
    spatial_heads: int = field(default=0, metadata=_range(0))
    # Length of the learned absolute positional parameter: the longest clip the model accepts.
    max_frames: int = field(default=2048, metadata=_range(1))
    pos_init: Literal["trunc_normal", "zeros"] = "trunc_normal"
    # Reconstruction decoder used only in pretraining (paper Table 9).
    decoder: Literal["linear", "mlp", "mlp_residual"] = "linear"
    # T2 and fusion; 0 for t2_layers / t2_heads means "same as T1".
    t2_layers: int = field(default=0, metadata=_range(0))
    t2_heads: int = field(default=0, metadata=_range(0))
    t2_dropout: float = field(default=0.1, metadata=_range(0.0, 1.0))
    # Cross-attention fusion (Q = T1 output, K = V = T2 output): "plain" is attention + residual +
    # LayerNorm (official Penn/N-UCLA); "ffn" adds a feed-forward block (official NTU).
    fusion: Literal["plain", "ffn"] = "plain"
    # Heads of the cross-attention; 0 means "same as t1_heads", as trained. The official Penn/N-UCLA
    # evaluation rebuilt it with 4 heads (a quirk: weights fit any head count); 4 reproduces that.
    fusion_heads: int = field(default=0, metadata=_range(0))
    fusion_dropout: float = field(default=0.1, metadata=_range(0.0, 1.0))
    # Classification head: one linear layer (Penn/N-UCLA) or LayerNorm-MLP (NTU).
    head: Literal["linear", "mlp"] = "linear"
    head_dropout: float = field(default=0.3, metadata=_range(0.0, 1.0))


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = field(default=1e-4, metadata=_range(0.0, lo_open=True))
    weight_decay: float = field(default=0.0, metadata=_range(0.0))
    # SGD only.
    momentum: float = field(default=0.9, metadata=_range(0.0, 1.0))
    nesterov: bool = False
    schedule: Literal["constant", "cosine"] = "constant"
    # Linear warm-up length as a share of the whole schedule.
    warmup: float = field(default=0.0, metadata=_range(0.0, 1.0))
    # Cosine floor.
    min_lr: float = field(default=0.0, metadata=_range(0.0))
    # Whether the schedule advances every optimiser step or once per epoch.
    schedule_unit: Literal["step", "epoch"] = "step"
    # Clip the global gradient norm to this value; 0 disables clipping.
    grad_clip: float = field(default=0.0, metadata=_range(0.0))


@dataclass
class StageConfig:
    """What both training stages have."""

    epochs: int = field(default=10, metadata=_range(1))
    batch_size: int = field(default=32, metadata=_range(1))
    # Besides best and last, keep the checkpoints of the last k epochs (checkpoints/epoch-NNNN.safetensors).
    keep_last: int = field(default=0, metadata=_range(0))
    # Exponential moving average of the weights, updated every optimiser step with this decay (e.g.
    # 0.999); 0 is off. The average is what validation selects and what best and epoch checkpoints
    # hold; last.safetensors keeps the raw weights to resume from (last_ema.safetensors the average).
    ema: float = field(default=0.0, metadata=_range(0.0, 0.99999))
    # Early stopping: end the stage once its validation score (top-1, or masked MSE in pretraining)
    # has not improved for this many epochs; 0 never stops early. Needs a validation split.
    patience: int = field(default=0, metadata=_range(0))


@dataclass
class PretrainConfig(StageConfig):
    optim: OptimConfig = field(default_factory=OptimConfig)
    # joint_slots: random (frame, joint) slots, as the official code; joints: the same joints in
    # every frame, as the paper's wording; frames: whole frames; none: plain reconstruction.
    mask: Literal["joint_slots", "joints", "frames", "none"] = "joint_slots"
    mask_ratio: float = field(default=0.3, metadata=_range(0.0, 1.0, lo_open=True))
    # Keep the T1 of the last epoch, or the one with the lowest masked MSE on the validation split
    # (validation masks are fixed and seeded, so epochs compare fairly).
    select: Literal["last", "val"] = "last"


# When a clip leaves at an early exit (cascade_cli.inference.cascade); named here, beside the other
# choices the command line offers, so that the CLI need not import torch to list them.
EXIT_RULES = ("max_softmax", "entropy", "patience")
EXIT_PLACES = ("t1", "layers")  # where exit heads sit: after T1, or after every encoder layer of T1 and T2
BACKENDS = ("torch", "onnx")  # what runs a model at inference (cascade_cli.inference.backend)
INFERENCE_PRECISIONS = ("fp32", "bf16", "fp16")  # inference autocast, fp32 unless asked (runtime.inference_dtype)


@dataclass
class FinetuneConfig(StageConfig):
    # Pretraining run directory or checkpoint whose T1 starts finetuning; `--pretrained` sets it.
    pretrained: str = ""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adamw", lr=3e-5, weight_decay=1e-4,
                                                                   schedule="cosine", warmup=0.05,
                                                                   schedule_unit="epoch"))
    # T1 during finetuning: all trainable, frozen (eval mode), or only its last `t1_trainable_layers`.
    t1: Literal["full", "frozen", "last_k"] = "full"
    t1_trainable_layers: int = field(default=1, metadata=_range(1))
    label_smoothing: float = field(default=0.0, metadata=_range(0.0, 1.0))
    # Early exits trained jointly with the classifier (BranchyNet-style): above 0, exit heads at
    # `exits` (t1: after T1; layers: after every encoder layer of T1 and T2) are added and the loss
    # is the main cross-entropy plus this weight times the mean of the exits' cross-entropies.
    exit_loss_weight: float = field(default=0.0, metadata=_range(0.0))
    exits: Literal[EXIT_PLACES] = "t1"
    # Keep the epoch with the best validation top-1 (a tie goes to the lower validation loss), or
    # simply the last epoch.
    select: Literal["val", "last"] = "val"


CONTINUAL_METHODS = ("ft", "joint", "er", "der", "derpp", "charon")


@dataclass
class ContinualConfig:
    """Class-incremental learning (`cascade continual`); reference continual_learning.md."""

    # Tasks of disjoint classes, seen one after another; the classes must split into equal tasks.
    tasks: int = field(default=5, metadata=_range(1))
    # sorted, random:SEED, charon-ntu60 (the CHARON code's Split NTU-60 order) or a file of class names.
    class_order: str = "sorted"
    # ft (finetune, lower bound), joint (all tasks at once, upper bound), er, der, derpp, charon.
    method: Literal[CONTINUAL_METHODS] = "derpp"
    # The buffer's size in full clips: its bytes. CHARON keeps every `compression`-th frame, in as
    # many slots as fit in those bytes (about `compression` times more clips); the others full clips.
    buffer: int = field(default=200, metadata=_range(1))
    compression: int = field(default=5, metadata=_range(1))
    # SGD without a schedule, as the CHARON code; a fresh optimizer for every task.
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="sgd", lr=0.05, momentum=0.0,
                                                                   schedule_unit="epoch"))
    # Loss weights, and CHARON's masking and probing (the CHARON paper's values):
    alpha: float = field(default=0.3, metadata=_range(0.0))  # the buffer's logits (DER, DER++, CHARON)
    beta: float = field(default=0.8, metadata=_range(0.0))  # the buffer's labels (DER++, CHARON)
    gamma: float = field(default=0.5, metadata=_range(0.0))  # reconstruction (CHARON)
    mask_ratio: float = field(default=0.3, metadata=_range(0.0, 1.0))  # frames hidden before T1 (CHARON)
    probe_epochs: int = field(default=3, metadata=_range(0))  # linear probing after each task (CHARON)
    epochs: int = field(default=30, metadata=_range(1))  # per task
    batch_size: int = field(default=16, metadata=_range(1))
    # T1 from scratch (none), or masked pretraining of T1 on the first task's training clips alone
    # (first_task; pretrain.* settings) before the first task: never on data of a later task.
    pretrain: Literal["none", "first_task"] = "none"


@dataclass
class LogConfig:
    # Also write TensorBoard event files into RUN/tensorboard/ (needs the tensorboard package:
    # pip install 'cascade-cli[tensorboard]').
    tensorboard: bool = False


@dataclass
class Config:
    seed: int = field(default=42, metadata=_range(0))
    # auto (CUDA if available), cpu, cuda, cuda:N.
    device: str = "auto"
    # Mixed precision: auto = bf16 on GPUs that support it (else fp16 with loss scaling) and on
    # CPUs with bf16 matrix hardware (AMX, AVX-512 BF16, Arm BF16: two to four times faster
    # there); float32 on other CPUs, where bf16 is emulated. off = float32. The run log says which.
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    # Compile the model with torch.compile for training (worth it for long runs on GPUs).
    compile: bool = False
    # CPU training draws dropout masks four elements per 64-bit random word (training/fast_dropout.py),
    # for the dropout layers and inside attention: PyTorch's per-element draw costs up to a quarter of a
    # CPU step. false trains with PyTorch's own dropout. No effect on GPUs or in evaluation.
    fast_cpu_dropout: bool = True
    # Gradient accumulation: each optimiser step sums this many micro-batches, so a global batch
    # that no longer fits (fewer GPUs) keeps its size.
    accumulate: int = field(default=1, metadata=_range(1))
    # DataLoader worker processes; 0 loads in the main process.
    workers: int = field(default=0, metadata=_range(0))
    eval_batch_size: int = field(default=64, metadata=_range(1))
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    log: LogConfig = field(default_factory=LogConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)


# ----------------------------------------------------------------------------------------------
# Loading, merging and validation


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return "a list of names or indices (a YAML list, or comma-separated: a,b)"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _coerce_list(key: str, tp: Any, value: Any) -> list[str]:
    """A list of names as a YAML list, or as the one string `--set key=a,b` arrives as: lists are
    the natural form in a preset, commas the handiest on a command line.
    Integers become their text, so `[0, walk]` and `0,walk` are the same list."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "[]")):
        return []
    given = value
    if isinstance(value, str):
        value = value.split(",")
    elif not isinstance(value, list):
        value = [value]
    items = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise UserError(f"config key '{key}': {item!r} is not a name or an integer index; use {_describe(tp)}")
        text = str(item).strip()
        if not text:
            raise UserError(f"config key '{key}': {given!r} has an empty entry; use {_describe(tp)}")
        items.append(text)
    return items


def _coerce(key: str, tp: Any, value: Any, meta: typing.Mapping) -> Any:
    """Check one leaf value against its declared type and range; return it in canonical form."""
    if typing.get_origin(tp) is list:
        return _coerce_list(key, tp, value)
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        # YAML reads `variant: 1.0` as a float and `amp: off` as false; accept them when their text
        # is a valid choice.
        if isinstance(value, bool):
            as_text = "on" if value else "off"
        else:
            as_text = value if isinstance(value, str) else (str(value) if isinstance(value, (int, float)) else None)
        if as_text not in choices:
            shown = repr(as_text if isinstance(value, bool) else value)
            raise UserError(f"config key '{key}': {shown} is not allowed; use {_describe(tp)}")
        return as_text
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value, ok = str(value), True
    if not ok:
        raise UserError(f"config key '{key}': expected {_describe(tp)}, got {value!r}")
    if tp is float:
        value = float(value)
    if "range" in meta:
        lo, hi, lo_open = meta["range"]
        too_low = lo is not None and (value <= lo if lo_open else value < lo)
        too_high = hi is not None and value > hi
        if too_low or too_high:
            left = "(" if lo_open else "["
            bounds = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
            raise UserError(f"config key '{key}': {value!r} is out of range {bounds}")
    return value


def _merge(obj: Any, updates: dict, prefix: str = "") -> None:
    """Apply a nested dict of updates onto a dataclass instance, validating every leaf."""
    if not isinstance(updates, dict):
        raise UserError(f"config key '{prefix.rstrip('.') or '<root>'}': expected a mapping, got {updates!r}")
    hints = typing.get_type_hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for name, value in updates.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise UserError(f"unknown config key '{key}'; known keys here: {', '.join(fields)}")
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            _merge(getattr(obj, name), value, key + ".")
        else:
            setattr(obj, name, _coerce(key, tp, value, fields[name].metadata))


def parse_override(text: str) -> dict:
    """Turn ``a.b.c=value`` into ``{"a": {"b": {"c": value}}}``; the value is read as YAML."""
    if "=" not in text:
        raise UserError(f"--set '{text}': expected KEY=VALUE, e.g. --set finetune.optim.lr=3e-5")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"--set '{text}': the key must be dotted names, e.g. model.d_model")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML 1.1 reads '1e-4' as a string; numbers written that way are common in ML configs.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    nested: dict = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def resolve_preset(name: str) -> Path:
    """A preset is a YAML path, or a name under cascade_cli/presets/ (``table1/penn_action-1.0`` style)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    candidate = PRESETS_DIR / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    raise UserError(f"preset '{name}' not found; available: {', '.join(list_presets()) or '(none)'} "
                    "(see `cascade presets list`)")


# The optional `preset:` block of a preset file describes the experiment; it is not configuration.
PRESET_INFO_KEYS = {"title": str, "table": str, "dataset": str, "arm": str, "paper_top1": float,
                    "reproduces": list, "differs": list}


def _split_preset_info(path: Path, data: dict) -> tuple[dict, dict]:
    info = data.pop("preset", None) or {}
    if not isinstance(info, dict):
        raise UserError(f"{path}: 'preset' must be a mapping of {', '.join(PRESET_INFO_KEYS)}")
    for key, value in info.items():
        expected = PRESET_INFO_KEYS.get(key)
        if expected is None:
            raise UserError(f"{path}: unknown key 'preset.{key}'; known: {', '.join(PRESET_INFO_KEYS)}")
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = info[key] = float(value)
        if expected is str and isinstance(value, (int, float)):
            value = info[key] = str(value)
        if not isinstance(value, expected):
            raise UserError(f"{path}: 'preset.{key}' should be {expected.__name__}, got {value!r}")
    return info, data


def _preset_chain(name: str, seen: tuple[str, ...] = ()) -> list[tuple[Path, dict, dict]]:
    """[(path, info, config data)] from the root `base:` ancestor down to `name` itself.

    A preset may start from another (`base: table1/penn_action-1.0`) and change only what its
    experiment changes, so an ablation arm states exactly its difference from the recipe."""
    path = resolve_preset(name)
    if str(path) in seen:
        raise UserError(f"{path}: 'base' presets form a cycle")
    info, data = _split_preset_info(path, read_yaml_mapping(path, "a mapping of config sections"))
    data.pop("history", None)  # a run's config.yaml used as a preset: its amendment history is not configuration
    base = data.pop("base", None)
    if base is None:
        return [(path, info, data)]
    if not isinstance(base, str):
        raise UserError(f"{path}: 'base' must be a preset name, got {base!r}")
    return _preset_chain(base, (*seen, str(path))) + [(path, info, data)]


def preset_info(name: str) -> dict:
    """The `preset:` block of a preset (title, table, dataset, arm, paper_top1, ...); `dataset` is
    inherited from a base preset when not stated."""
    chain = _preset_chain(name)
    info = dict(chain[-1][1])
    for _, ancestor, _ in reversed(chain[:-1]):
        info.setdefault("dataset", ancestor.get("dataset"))
    return {k: v for k, v in info.items() if v is not None}


def list_presets() -> list[str]:
    return sorted(str(p.relative_to(PRESETS_DIR).with_suffix("")) for p in PRESETS_DIR.rglob("*.yaml"))


def load_config(preset: str | None = None, overrides: typing.Sequence[str] = (),
                base: dict | None = None) -> Config:
    """Defaults, then `base` (e.g. a run's saved config), then the preset, then each --set."""
    cfg = Config()
    if base:
        _merge(cfg, base)
    if preset:
        for path, _, data in _preset_chain(preset):
            try:
                _merge(cfg, data)
            except UserError as exc:
                raise UserError(f"{path}: {exc}") from None
    for text in overrides:
        _merge(cfg, parse_override(text))
    return cfg


def config_from_dict(data: dict) -> Config:
    cfg = Config()
    _merge(cfg, data)
    return cfg
