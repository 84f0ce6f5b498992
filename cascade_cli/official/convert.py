"""Importing the official CascadeFormer checkpoints (reference B.11) as self-describing cascade checkpoints.

The official release is one bare ``state_dict`` per module (T1, T2, cross-attention, head) and no
configuration, so the architecture has to be read back from key names and tensor shapes. The head
count changes no shape; it comes from the size table of reference B.4 unless the user gives it.
Every official key must land in one of our parameters and every parameter must be filled: a file
from another code version then fails with the file and key named, instead of being evaluated with
half of its weights random.

``convert_official(source, out)`` writes into the directory ``out``:

* ``finetuned.safetensors`` (kind "finetune"): T1 (``*_finetuned_T1.pt``, else the pretrained T1,
  as N-UCLA finetuning may leave T1 unchanged), T2, cross-attention and head;
* ``pretrained.safetensors`` (kind "pretrain"): the pretrained T1 with its reconstruction decoder,
  whenever ``*_pretrained.pt`` is there, so that its decoder keys are consumed too and the released
  T1 can start new finetuning runs.

The decoder copy inside ``*_finetuned_T1.pt`` is checked like every other key but not kept: finetuning
never updates it, so it equals the pretrained one.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from dataclasses import replace
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.utils import (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                   RevisionNotFoundError)
from torch import Tensor, nn

import cascade_cli
from cascade_cli.checkpoint import CONVERTED, git_commit, save_checkpoint
from cascade_cli.config import Config, load_config, to_dict
from cascade_cli.errors import UserError, require_directory
from cascade_cli.model import build_classifier, build_t1
from cascade_cli.model.encoder import check_heads
from cascade_cli.official.release import DATASETS, DEFAULT_REVISION, HUB_REPO, VARIANTS, hub_folder

ROLES = ("pretrained", "finetuned_T1", "finetuned_T2", "finetuned_cross_attn", "finetuned_head")
FINETUNED, PRETRAINED = CONVERTED["finetune"], CONVERTED["pretrain"]
# The widths of B.4 tell the NTU splits apart: 768 (1.2: 800) is CS, 512 (1.2: 600) is CV.
NTU_SPLIT_BY_WIDTH = {768: "ntu60_xsub", 800: "ntu60_xsub", 512: "ntu60_xview", 600: "ntu60_xview"}
# NTU_CS (code), BEST_NTU_CS_1_0 (Hub) and BEST_NTU_1_0_CS (CascadeFormer-Agent) name the split too.
NTU_SPLIT_FOLDER = re.compile(r"(?:BEST_)?NTU(?:60)?(?:_\d_\d)?_(CS|CV)(?:_\d_\d)?", re.IGNORECASE)
# T1's feature extractor sits under `features.` in our model; Penn 1.0 calls its frame Linear `embedding`.
FEATURE_MODULES = ("joint_conv.", "spatial_transformer.")


def download_official(variant: str = "1.0", dataset: str = "penn_action", *, revision: str = DEFAULT_REVISION,
                      cache_dir: str | Path | None = None, offline: bool = False) -> Path:
    """Fetch (or find in the Hugging Face cache) one released model's folder; returns its local path."""
    folder = hub_folder(variant, dataset)
    where = f"{folder} of {HUB_REPO} at revision {revision}"
    cache = f"the cache {cache_dir}" if cache_dir else "the default Hugging Face cache"
    by_analogy = ("" if variant == "1.0" else
                  "; only the 1.0 folders are known to be released, 1.1 and 1.2 ones are expected by analogy")
    try:
        snapshot = snapshot_download(repo_id=HUB_REPO, revision=revision, allow_patterns=[f"{folder}/*"],
                                     cache_dir=cache_dir, local_files_only=offline)
    except LocalEntryNotFoundError:
        raise UserError(_not_cached(where, cache, offline) + by_analogy) from None
    except RepositoryNotFoundError:
        raise UserError(f"{HUB_REPO} was not found on the Hugging Face Hub or is not accessible; check the "
                        "network, proxy and HF_ENDPOINT settings") from None
    except RevisionNotFoundError:
        raise UserError(f"revision {revision!r} does not exist in {HUB_REPO}; pass --revision main for the "
                        "newest files, or a commit hash from the repository's history") from None
    except EntryNotFoundError:
        raise UserError(f"{where} was not found{by_analogy}") from None
    except OSError as exc:  # HTTP errors of the Hub client are OSErrors too
        raise UserError(f"downloading {where} failed ({str(exc).splitlines()[0]}); check the network and run "
                        "again (files already fetched stay in the cache)") from None
    local = Path(snapshot) / folder
    if not any(local.glob("*.pt")):
        raise UserError((_not_cached(where, cache, offline) if offline else f"{where} holds no .pt files") + by_analogy)
    return local


def _not_cached(where: str, cache: str, offline: bool) -> str:
    if offline:
        return (f"{where} is not in {cache} and --offline was given; run without --offline on a machine with "
                "network access, or pass --cache-dir pointing to a cache that holds it")
    return (f"{where} is not in {cache} and the Hub could not be reached; check the network (and that "
            "HF_HUB_OFFLINE is not set), or pass --cache-dir pointing to a cache that holds it")


def convert_official(source_dir: str | Path, out_path: str | Path, *, dataset: str | None = None,
                     variant: str | None = None, heads: int | None = None,
                     eval_cross_attn_heads: int | None = None) -> dict:
    """Convert the official per-module .pt files under `source_dir` into cascade checkpoints in the
    directory `out_path` (see the module docstring). `dataset` and `variant`, when given, must agree
    with what the files show; `heads` overrides the B.4 head count. `eval_cross_attn_heads` records
    the official evaluation quirk (Part C row 4: Penn/N-UCLA inference rebuilt the cross-attention
    with 4 heads); the weights do not depend on it. Returns a summary of what was written."""
    source, out = Path(source_dir), Path(out_path)
    if out.is_file():
        raise UserError(f"{out}: is a file; the output must be a directory (it receives {FINETUNED} and {PRETRAINED})")
    files = _find_files(source)
    states = {role: _load(path) for role, path in files.items()}
    t1_role = "finetuned_T1" if "finetuned_T1" in files else "pretrained"
    if t1_role not in files:
        raise UserError(f"{source}: no *_finetuned_T1.pt or *_pretrained.pt; a T1 is needed")
    t1_path, t1_state = files[t1_role], states[t1_role]
    finetuned = [role for role in ROLES[2:] if role in files]
    if finetuned and len(finetuned) < 3:
        missing = ", ".join(f"*_{role}.pt" for role in ROLES[2:] if role not in files)
        raise UserError(f"{source}: {missing} missing; a classifier needs T2, cross-attention and head files")

    sizes, joint_width = _sniff_t1(t1_path, t1_state)
    variant = _resolve("variant", [("the T1 state_dict", {sizes["variant"]}),
                                   ("the variant argument", {variant} if variant else None)], VARIANTS)
    key = _resolve("dataset", _dataset_clues(files, sizes["d_model"], joint_width, dataset), DATASETS)
    spec = DATASETS[key]
    if finetuned:
        sizes |= _sniff_classifier(files, states, len(spec.class_names))
    sizes["t1_heads"] = heads or spec.heads
    cfg = load_config(spec.preset(variant))
    cfg.model = replace(cfg.model, **sizes, spatial_heads=0, t2_heads=0, fusion_heads=eval_cross_attn_heads or 0)
    num_joints = spec.layout.num_joints
    in_channels = spec.layout.coords
    heads_note = f"{sizes['t1_heads']} heads ({'given' if heads else f'B.4 table for {key}'})"
    try:
        if eval_cross_attn_heads:
            check_heads(cfg.model.d_model, eval_cross_attn_heads, "eval_cross_attn_heads vs. d_model")
        t1s = {role: build_t1(cfg.model, num_joints, in_channels, with_decoder=True)
               for role in (t1_role, "pretrained") if role in files}
        model = build_classifier(cfg.model, num_joints, in_channels, len(spec.class_names)) if finetuned else None
    except ValueError as exc:
        raise UserError(f"{source}: {exc} (with {heads_note}; pass heads=... if the table is wrong)") from None

    # Everything is loaded and checked before anything is written, so a bad file leaves no output.
    what = f"CascadeFormer {variant} {key} (d={cfg.model.d_model}, {cfg.model.t1_layers} layers)"
    # Penn 1.0 names its frame Linear `embedding`; everything else is a prefix away from our names.
    embedding = "embedding." if "embedding.weight" in t1_state else "joint_embedding."
    t1_renames = [(embedding, "features.joint_embedding."), *((m, f"features.{m}") for m in FEATURE_MODULES)]
    for role, t1 in t1s.items():
        _fill(t1, states[role], files[role], what + " T1", t1_renames)
    if finetuned:
        model.t1.load_state_dict({k: v for k, v in t1s[t1_role].state_dict().items()
                                  if not k.startswith("reconstruction_head.")})
        for role, part in zip(ROLES[2:], (model.t2, model.fusion, model.head)):
            _fill(part, states[role], files[role], f"{what} {role.removeprefix('finetuned_')}")

    common = {"variant": variant, "dataset": spec.name, "protocol": spec.protocol, "layout": spec.layout.to_dict(),
              "class_names": list(spec.class_names), "num_joints": num_joints, "in_channels": in_channels,
              "representation": cfg.data.representation, "person": cfg.data.person, "epoch": None,
              "selected_by": "official release", "git_commit": git_commit(), "confidence": spec.dataset.confidence}
    provenance = {"hub": _hub_origin(source), "converted_by": f"cascade_cli {cascade_cli.__version__}",
                  "heads": sizes["t1_heads"], "heads_from": "user" if heads else "table B.4"}
    outputs = {}
    if finetuned:
        used = {role: files[role] for role in (t1_role, *ROLES[2:])}
        outputs["finetune"] = _save(out / FINETUNED, model, cfg, {
            **common, "kind": "finetune", "num_classes": len(spec.class_names),
            "eval_cross_attn_heads": eval_cross_attn_heads, "provenance": {**provenance, "files": _hashes(used)}})
    if "pretrained" in t1s:
        outputs["pretrain"] = _save(out / PRETRAINED, t1s["pretrained"], cfg, {
            **common, "kind": "pretrain",
            "provenance": {**provenance, "files": _hashes({"pretrained": files["pretrained"]})}})
    return {"outputs": outputs, "dataset": key, "protocol": spec.protocol, "variant": variant,
            "model": to_dict(cfg.model), "eval_cross_attn_heads": eval_cross_attn_heads, "provenance": provenance}


def _find_files(source: Path) -> dict[str, Path]:
    """role -> file, found by name suffix anywhere below `source` (the code nests NTU in NTU_CS/)."""
    require_directory(source, "folder of official checkpoint files")
    found: dict[str, list[Path]] = {}
    for path in sorted(source.rglob("*.pt")):
        for role in ROLES:
            if path.name.endswith(f"_{role}.pt"):
                found.setdefault(role, []).append(path)
    if not found:
        raise UserError(f"{source}: no official checkpoint files (*_{{{','.join(ROLES)}}}.pt)")
    for role, paths in found.items():
        if len(paths) > 1:
            raise UserError(f"{source}: several *_{role}.pt ({', '.join(str(p.relative_to(source)) for p in paths)}); "
                            "pass the folder of one model")
    prefixes = {path.name.removesuffix(f"_{role}.pt") for role, (path,) in found.items()}
    if len(prefixes) > 1:
        raise UserError(f"{source}: files of several models ({', '.join(sorted(prefixes))}); pass the folder of one")
    return {role: paths[0] for role, paths in found.items()}


def _load(path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise UserError(f"{path}: not a readable torch file ({str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{path}: expected a plain state_dict, a dict of tensors as "
                        "torch.save(module.state_dict()) writes")
    return dict(state)


def _tensor(path: Path, state: dict[str, Tensor], key: str) -> Tensor:
    if key not in state:
        raise UserError(f"{path}: missing key '{key}'; not an official CascadeFormer checkpoint of a known version")
    return state[key]


def _layer_count(state: dict[str, Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def _sniff_t1(path: Path, state: dict[str, Tensor]) -> tuple[dict, int]:
    """Model sizes and the flattened frame width J*C, from the T1 keys and shapes (reference B.11)."""
    pos = _tensor(path, state, "pos_embedding")
    if pos.dim() != 3:
        raise UserError(f"{path}: pos_embedding has shape {tuple(pos.shape)}, expected [1, frames, d]")
    d = pos.shape[2]
    sizes = {"d_model": d, "max_frames": pos.shape[1], "t1_layers": _layer_count(state, "transformer_encoder.layers."),
             "ffn_dim": _tensor(path, state, "transformer_encoder.layers.0.linear1.weight").shape[0]}
    if "spatial_transformer.joint_embedding.weight" in state:
        # With output_proj it is the Penn/N-UCLA code form; without it, the paper form of NTU.
        form = "code" if "spatial_transformer.output_proj.weight" in state else "paper"
        sizes |= {"variant": "1.2", "spatial_form": form}
    else:
        sizes["variant"] = "1.1" if "joint_conv.0.weight" in state else "1.0"
    # The Table 9 decoder ablations keep their names (reference B.10); the released files use the linear one.
    sizes["decoder"] = ("mlp_residual" if "reconstruction_head.proj_residual.weight" in state else
                        "mlp" if "reconstruction_head.0.weight" in state else "linear")
    frame = state.get("embedding.weight", state.get("joint_embedding.weight"))
    if frame is not None:
        return sizes, frame.shape[1]
    width, channels = _tensor(path, state, "spatial_transformer.joint_embedding.weight").shape
    return sizes, d // width * channels  # the paper form gives each of the J joints d/J


def _sniff_classifier(files: dict[str, Path], states: dict[str, dict[str, Tensor]], num_classes: int) -> dict:
    head = states["finetuned_head"]
    mlp = "net.5.weight" in head
    classes = _tensor(files["finetuned_head"], head, "net.5.weight" if mlp else "fc.weight").shape[0]
    if classes != num_classes:
        raise UserError(f"{files['finetuned_head']}: {classes} classes, but the dataset has {num_classes}")
    return {"t2_layers": _layer_count(states["finetuned_T2"], "encoder.layers."), "head": "mlp" if mlp else "linear",
            "fusion": "ffn" if "ffn.0.weight" in states["finetuned_cross_attn"] else "plain"}


def _dataset_clues(files: dict[str, Path], d: int, joint_width: int, argument: str | None) -> list:
    """(source, datasets it allows) for every hint at the dataset the files belong to."""
    prefix = next(path.name.removesuffix(f"_{role}.pt") for role, path in files.items())
    widths = {k: spec.layout.num_joints * spec.layout.coords for k, spec in DATASETS.items()}
    clues = [(f"the file prefix '{prefix}'", {k for k, spec in DATASETS.items() if spec.prefix == prefix} or None),
             (f"the frame width J*C = {joint_width}", {k for k, w in widths.items() if w == joint_width} or None),
             ("the dataset argument", {argument} if argument else None)]
    if joint_width == 75:
        clues.append((f"d_model = {d}", {NTU_SPLIT_BY_WIDTH[d]} if d in NTU_SPLIT_BY_WIDTH else None))
        folders = {m.group(1).upper() for path in files.values() for part in path.absolute().parts
                   if (m := NTU_SPLIT_FOLDER.fullmatch(part))}
        clues += [(f"the folder name (NTU {split})", {"ntu60_xsub" if split == "CS" else "ntu60_xview"})
                  for split in sorted(folders)]
    return clues


def _resolve(what: str, clues: list[tuple[str, set[str] | None]], options) -> str:
    """The one option that every clue allows, or a UserError naming the clues that disagree."""
    remaining = set(options)
    for source, allowed in clues:
        if allowed is None:
            continue
        if not allowed & set(options):
            raise UserError(f"{what}: {source} names {', '.join(sorted(allowed))}; use one of {', '.join(options)}")
        if not remaining & allowed:
            said = "; ".join(f"{s} says {' or '.join(sorted(a))}" for s, a in clues if a is not None)
            raise UserError(f"cannot tell the {what}, the hints disagree: {said}")
        remaining &= allowed
    if len(remaining) != 1:
        raise UserError(f"cannot tell the {what} from the files (could be {' or '.join(sorted(remaining))}); "
                        f"pass it explicitly ({what}=...)")
    return remaining.pop()


def _rename(key: str, renames: list[tuple[str, str]]) -> str:
    for old, new in renames:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _fill(module: nn.Module, state: dict[str, Tensor], path: Path, what: str,
          renames: list[tuple[str, str]] = ()) -> None:
    """Load official `state` into `module`, requiring every key to match one parameter, shape included,
    and every parameter to be matched."""
    own = module.state_dict()
    ours = {_rename(key, renames): key for key in state}
    for key, theirs in ours.items():
        if key not in own:
            raise UserError(f"{path}: unexpected key '{theirs}' for {what}; a file of another code version?")
        if state[theirs].shape != own[key].shape:
            raise UserError(f"{path}: '{theirs}' has shape {list(state[theirs].shape)}, {what} expects "
                            f"{list(own[key].shape)}")
    for key in own:
        if key not in ours:
            raise UserError(f"{path}: missing key '{_rename(key, [(n, o) for o, n in renames])}' of {what}")
    module.load_state_dict({key: state[theirs] for key, theirs in ours.items()})


def _hashes(files: dict[str, Path]) -> dict[str, dict]:
    result = {}
    for role, path in files.items():
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        result[role] = {"file": path.name, "sha256": digest.hexdigest()}
    return result


def _hub_origin(source: Path) -> dict | None:
    """Repo, commit and folder when `source` lies in a Hugging Face cache snapshot (download_official)."""
    parts = source.absolute().parts
    for i, part in enumerate(parts[:-2]):
        if part.startswith("models--") and parts[i + 1] == "snapshots":
            return {"repo": part.removeprefix("models--").replace("--", "/"), "revision": parts[i + 2],
                    "folder": "/".join(parts[i + 3:])}
    return None


def _save(path: Path, model: nn.Module, cfg: Config, meta: dict) -> str:
    save_checkpoint(path, model, cfg, meta)
    return str(path)
