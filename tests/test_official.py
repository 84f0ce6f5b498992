"""Importing official checkpoints, fully offline: official-format files are built here from the key
names and shapes of reference B.11 with random weights, and the converted model must give the logits
of a reference forward written from torch.nn primitives after reference B.2-B.3."""

import hashlib
import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from torch import nn

from cascade_cli.checkpoint import load_checkpoint
from cascade_cli.errors import UserError
from cascade_cli.model import build_classifier, build_t1
from cascade_cli.official.convert import convert_official, download_official
from cascade_cli.official.release import DEFAULT_REVISION, HUB_REPO, hub_folder

ENC = ["self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight", "self_attn.out_proj.bias",
       "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
       "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"]


def enc(prefix: str, layers: int) -> set[str]:
    return {f"{prefix}layers.{i}.{k}" for i in range(layers) for k in ENC}


def stack(width, heads, layers, ffn, dropout=0.1, batch_first=True):
    layer = nn.TransformerEncoderLayer(width, heads, ffn, dropout, batch_first=batch_first)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


# ---------------------------------------------------------------------------------------------
# The official modules, as reference B.2-B.3 describe them


class OfficialT1(nn.Module):
    def __init__(self, kind, d, heads, layers, ffn, J, C, frames):
        super().__init__()
        self.kind = kind
        if kind == "penn_1.0":
            self.embedding = nn.Linear(J * C, d)
        elif kind == "1.1":
            self.joint_conv = nn.Sequential(nn.Conv1d(C, C, 3, padding=1), nn.ReLU(), nn.Conv1d(C, C, 1))
            self.joint_embedding = nn.Linear(J * C, d)
        else:  # 1.2: per-joint width d/J concatenated (NTU), or d projected back to C (Penn, N-UCLA)
            width = d // J if kind == "ntu_1.2" else d
            self.spatial_transformer = nn.Module()
            self.spatial_transformer.joint_embedding = nn.Linear(C, width)
            self.spatial_transformer.encoder = stack(width, heads, 1, ffn)
            if kind == "code_1.2":
                self.spatial_transformer.output_proj = nn.Linear(width, C)
                self.joint_embedding = nn.Linear(J * C, d)
        self.pos_embedding = nn.Parameter(torch.zeros(1, frames, d))
        # Penn 1.0 runs its encoder sequence-first, with explicit transposes.
        self.transformer_encoder = stack(d, heads, layers, ffn, batch_first=kind != "penn_1.0")
        self.reconstruction_head = nn.Linear(d, J * C)

    def forward(self, x):  # (B, T, J, C)
        B, T, J, C = x.shape
        if self.kind == "penn_1.0":
            tokens = self.embedding(x.reshape(B, T, J * C))
        elif self.kind == "1.1":
            joints = self.joint_conv(x.reshape(B * T, J, C).permute(0, 2, 1))  # (B*T, C, J)
            tokens = self.joint_embedding(joints.permute(0, 2, 1).reshape(B, T, J * C))
        else:
            st = self.spatial_transformer
            tokens = st.encoder(st.joint_embedding(x.reshape(B * T, J, C)))
            if self.kind == "code_1.2":
                tokens = self.joint_embedding(st.output_proj(tokens).reshape(B, T, J * C))
            else:
                tokens = tokens.reshape(B, T, -1)
        tokens = tokens + self.pos_embedding[:, :T, :]
        if self.kind == "penn_1.0":
            return self.transformer_encoder(tokens.transpose(0, 1)).transpose(0, 1)
        return self.transformer_encoder(tokens)


class OfficialT2(nn.Module):
    def __init__(self, d, heads, layers, ffn, dropout):
        super().__init__()
        self.encoder = stack(d, heads, layers, ffn, dropout)

    def forward(self, x):
        return self.encoder(x)


class OfficialCrossAttention(nn.Module):
    def __init__(self, d, heads, with_ffn):
        super().__init__()
        self.with_ffn = with_ffn
        self.cross_attention = nn.MultiheadAttention(d, heads, dropout=0.2 if with_ffn else 0.0, batch_first=True)
        if with_ffn:
            self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.ffn = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(0.2), nn.Linear(d, d))
        else:
            self.norm = nn.LayerNorm(d)

    def forward(self, q, kv):
        attended = self.cross_attention(q, kv, kv)[0]
        if not self.with_ffn:
            return self.norm(q + attended)
        x = self.norm1(q + attended)
        return self.norm2(x + self.ffn(x))


class OfficialHead(nn.Module):
    def __init__(self, d, classes, mlp):
        super().__init__()
        if mlp:
            self.net = nn.Sequential(nn.LayerNorm(d), nn.Dropout(0.3), nn.Linear(d, d), nn.ReLU(), nn.Dropout(0.3),
                                     nn.Linear(d, classes))
        else:
            self.fc = nn.Linear(d, classes)

    def forward(self, x):
        return self.net(x) if hasattr(self, "net") else self.fc(x)


CASES = {
    # Penn 1.0 whose T1 was not finetuned: no *_finetuned_T1.pt, the classifier takes the pretrained T1.
    "penn": dict(prefix="Penn", kind="penn_1.0", variant="1.0", d=32, heads=8, layers=1, J=13, C=2, frames=1000,
                 classes=15, ntu=False, roles=("pretrained", "finetuned_T2", "finetuned_cross_attn", "finetuned_head")),
    "nucla": dict(prefix="NUCLA", kind="1.1", variant="1.1", d=32, heads=8, layers=2, J=20, C=3, frames=2048,
                  classes=10, ntu=False, roles=("pretrained", "finetuned_T1", "finetuned_T2", "finetuned_cross_attn",
                                                "finetuned_head")),
    # N-UCLA 1.2 in the official code form (spatial width d, projected back to C), no pretrained file.
    "nucla_1.2": dict(prefix="NUCLA", kind="code_1.2", variant="1.2", d=32, heads=8, layers=1, J=20, C=3,
                      frames=2048, classes=10, ntu=False,
                      roles=("finetuned_T1", "finetuned_T2", "finetuned_cross_attn", "finetuned_head")),
    # NTU 1.2 in the paper form at d = 50 (2 per joint): 2 heads instead of the table's 16, no pretrained file.
    "ntu": dict(prefix="NTU", kind="ntu_1.2", variant="1.2", d=50, heads=2, layers=1, J=25, C=3, frames=64,
                classes=60, ntu=True, subdir="NTU_CS",
                roles=("finetuned_T1", "finetuned_T2", "finetuned_cross_attn", "finetuned_head")),
}
FFN = 64


def documented_t1_keys(case) -> set[str]:
    """Reference B.11, state_dict keys of T1."""
    keys = {"pos_embedding", "reconstruction_head.weight", "reconstruction_head.bias"} | enc("transformer_encoder.",
                                                                                          case["layers"])
    if case["kind"] == "penn_1.0":
        return keys | {"embedding.weight", "embedding.bias"}
    spatial = {"spatial_transformer.joint_embedding.weight", "spatial_transformer.joint_embedding.bias"} \
        | enc("spatial_transformer.encoder.", 1)
    if case["kind"] == "ntu_1.2":
        return keys | spatial
    keys |= {"joint_embedding.weight", "joint_embedding.bias"}
    if case["kind"] == "code_1.2":
        return keys | spatial | {"spatial_transformer.output_proj.weight", "spatial_transformer.output_proj.bias"}
    return keys | {f"joint_conv.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Random weights at a scale that keeps the logits input-dependent through the post-norm stacks,
    so that a wrong key mapping shows in the logits."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            std = 0.5 if name == "pos_embedding" else p.shape[1:].numel() ** -0.5 if p.dim() > 1 else 0.2
            p.copy_(torch.randn(p.shape, generator=gen) * std)
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight += 1
    return module.eval()


def make_official(root: Path, name: str):
    """Write the case's official files; return their folder and the official modules."""
    case = CASES[name]
    d, h, L = case["d"], case["heads"], case["layers"]
    mods = {
        "pretrained": OfficialT1(case["kind"], d, h, L, FFN, case["J"], case["C"], case["frames"]),
        "finetuned_T1": OfficialT1(case["kind"], d, h, L, FFN, case["J"], case["C"], case["frames"]),
        "finetuned_T2": OfficialT2(d, h, L, FFN, 0.2 if case["ntu"] else 0.1),
        "finetuned_cross_attn": OfficialCrossAttention(d, h, with_ffn=case["ntu"]),
        "finetuned_head": OfficialHead(d, case["classes"], mlp=case["ntu"]),
    }
    folder = root / name / case.get("subdir", "")
    folder.mkdir(parents=True)
    for seed, role in enumerate(case["roles"]):
        torch.save(dict(randomize(mods[role], seed).state_dict()), folder / f"{case['prefix']}_{role}.pt")
    return root / name, mods


def official_logits(case, mods, x, cross=None):
    t1 = mods["finetuned_T1" if "finetuned_T1" in case["roles"] else "pretrained"]
    with torch.no_grad():
        e1 = t1(x)
        fused = (cross or mods["finetuned_cross_attn"])(e1, mods["finetuned_T2"](e1))
        return mods["finetuned_head"](fused.mean(1))  # the official code pools every frame, no masks


def converted_model(path: Path):
    ckpt = load_checkpoint(path)
    m = ckpt.meta
    model = build_classifier(ckpt.config.model, m["num_joints"], m["in_channels"], m["num_classes"])
    model.load_state_dict(ckpt.state_dict)
    return model.eval(), ckpt


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Conversion


@pytest.mark.parametrize("name", CASES)
def test_convert_matches_official_forward(tmp_path, name):
    case = CASES[name]
    source, mods = make_official(tmp_path, name)
    assert set(mods["pretrained"].state_dict()) == documented_t1_keys(case)
    summary = convert_official(source, tmp_path / "out", heads=2 if case["ntu"] else None)
    assert summary["variant"] == case["variant"]
    assert set(summary["outputs"]) == ({"finetune", "pretrain"} if "pretrained" in case["roles"] else {"finetune"})

    model, ckpt = converted_model(tmp_path / "out" / "finetuned.safetensors")
    cfg, meta = ckpt.config.model, ckpt.meta
    assert (cfg.variant, cfg.d_model, cfg.t1_layers, cfg.t1_heads, cfg.ffn_dim, cfg.max_frames) == \
        (case["variant"], case["d"], case["layers"], case["heads"], FFN, case["frames"])
    assert (cfg.fusion, cfg.head) == (("ffn", "mlp") if case["ntu"] else ("plain", "linear"))
    assert cfg.variant != "1.2" or cfg.spatial_form == ("paper" if case["ntu"] else "code")
    assert meta["kind"] == "finetune" and meta["selected_by"] == "official release" and meta["epoch"] is None
    assert (meta["num_joints"], meta["in_channels"], len(meta["class_names"])) == (case["J"], case["C"],
                                                                                 case["classes"])
    assert meta["provenance"]["heads_from"] == ("user" if case["ntu"] else "table B.4")
    files = meta["provenance"]["files"]
    assert {role: f["sha256"] for role, f in files.items()} == {
        role: sha256(next(source.rglob(f"*_{role}.pt"))) for role in files}

    x = torch.randn(2, 12, case["J"], case["C"], generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ours = model(x, None)
    assert ours.std(0).mean() > 0.05  # the logits depend on the input, so the comparison can fail
    torch.testing.assert_close(ours, official_logits(case, mods, x), rtol=0, atol=1e-5)

    if "pretrained" in case["roles"]:
        pre = load_checkpoint(tmp_path / "out" / "pretrained.safetensors")
        assert pre.meta["kind"] == "pretrain" and set(pre.meta["provenance"]["files"]) == {"pretrained"}
        t1 = build_t1(pre.config.model, case["J"], case["C"], with_decoder=True).eval()
        t1.load_state_dict(pre.state_dict)
        with torch.no_grad():
            expected = mods["pretrained"](x)
            torch.testing.assert_close(t1(x), expected, rtol=0, atol=1e-5)
            torch.testing.assert_close(t1.reconstruct(t1(x)).flatten(2),
                                       mods["pretrained"].reconstruction_head(expected), rtol=0, atol=1e-5)


def test_pretrained_only_with_an_ablation_decoder(tmp_path):
    official = OfficialT1("penn_1.0", 32, 8, 1, FFN, 13, 2, 1000)
    official.reconstruction_head = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 26))  # Table 9 MLP
    randomize(official, 0)
    (tmp_path / "src").mkdir()
    torch.save(dict(official.state_dict()), tmp_path / "src" / "Penn_pretrained.pt")
    summary = convert_official(tmp_path / "src", tmp_path / "out")
    assert set(summary["outputs"]) == {"pretrain"} and summary["model"]["decoder"] == "mlp"
    pre = load_checkpoint(tmp_path / "out" / "pretrained.safetensors")
    t1 = build_t1(pre.config.model, 13, 2, with_decoder=True).eval()
    t1.load_state_dict(pre.state_dict)
    x = torch.randn(2, 12, 13, 2)
    with torch.no_grad():
        torch.testing.assert_close(t1.reconstruct(t1(x)).flatten(2), official.reconstruction_head(official(x)),
                                   rtol=0, atol=1e-5)


def test_meta_names_dataset_protocol_and_layout(tmp_path):
    source, _ = make_official(tmp_path, "nucla")
    convert_official(source, tmp_path / "out", dataset="nw_ucla", variant="1.1")
    meta = load_checkpoint(tmp_path / "out" / "finetuned.safetensors").meta
    assert (meta["dataset"], meta["protocol"], meta["layout"]["name"]) == ("nw_ucla", "cross_view",
                                                                          "kinect_v1_20_official")
    assert meta["class_names"][0] == "pick up with one hand"


def test_eval_cross_attn_heads_is_recorded_and_reproduces_the_quirk(tmp_path):
    source, mods = make_official(tmp_path, "penn")
    summary = convert_official(source, tmp_path / "out", eval_cross_attn_heads=4)
    model, ckpt = converted_model(tmp_path / "out" / "finetuned.safetensors")
    assert ckpt.meta["eval_cross_attn_heads"] == summary["eval_cross_attn_heads"] == 4
    # The checkpoint's own config rebuilds the fusion with 4 heads, so every later evaluation of it
    # reproduces the official 4-head evaluation, which differs from the trained 8 heads.
    assert ckpt.config.model.fusion_heads == 4 and model.fusion.cross_attention.num_heads == 4
    quirk = OfficialCrossAttention(32, 4, with_ffn=False).eval()
    quirk.load_state_dict(mods["finetuned_cross_attn"].state_dict())
    x = torch.randn(2, 12, 13, 2)
    with torch.no_grad():
        ours = model(x, None)
    torch.testing.assert_close(ours, official_logits(CASES["penn"], mods, x, cross=quirk), rtol=0, atol=1e-5)
    assert not torch.allclose(ours, official_logits(CASES["penn"], mods, x), atol=1e-4)
    with pytest.raises(UserError, match="eval_cross_attn_heads"):
        convert_official(source, tmp_path / "bad", eval_cross_attn_heads=5)


def test_ntu_split_from_folder_width_or_argument(tmp_path):
    source, _ = make_official(tmp_path, "ntu")
    assert convert_official(source, tmp_path / "a", heads=2)["protocol"] == "xsub"  # from the NTU_CS folder
    with pytest.raises(UserError, match="hints disagree.*NTU CS"):
        convert_official(source, tmp_path / "b", heads=2, dataset="ntu60_xview")
    with pytest.raises(UserError, match="heads"):  # the table's 16 heads do not divide d = 50
        convert_official(source, tmp_path / "c")
    flat = tmp_path / "flat"
    shutil.copytree(source / "NTU_CS", flat)
    with pytest.raises(UserError, match="ntu60_xsub or ntu60_xview.*dataset="):
        convert_official(flat, tmp_path / "d", heads=2)
    summary = convert_official(flat, tmp_path / "e", heads=2, dataset="ntu60_xview")
    assert summary["protocol"] == "xview" and summary["model"]["t1_heads"] == 2


def edit_file(path: Path, change) -> None:
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


@pytest.mark.parametrize("role,change,message", [
    ("finetuned_T2", lambda s: s.update(extra=torch.zeros(1)), "Penn_finetuned_T2.pt: unexpected key 'extra'"),
    ("finetuned_cross_attn", lambda s: s.pop("norm.bias"), "Penn_finetuned_cross_attn.pt: missing key 'norm.bias'"),
    ("pretrained", lambda s: s.pop("reconstruction_head.bias"),
     "Penn_pretrained.pt: missing key 'reconstruction_head.bias'"),
    ("pretrained", lambda s: s.pop("embedding.bias"), "Penn_pretrained.pt: missing key 'embedding.bias'"),
    ("finetuned_head", lambda s: s.update({"fc.weight": torch.zeros(15, 31)}),
     "'fc.weight' has shape \\[15, 31\\]"),
])
def test_every_key_must_be_consumed_and_every_parameter_filled(tmp_path, role, change, message):
    source, _ = make_official(tmp_path, "penn")
    edit_file(source / f"Penn_{role}.pt", change)
    with pytest.raises(UserError, match=message):
        convert_official(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_arguments_must_agree_with_the_files(tmp_path):
    source, _ = make_official(tmp_path, "penn")
    with pytest.raises(UserError, match="variant.*T1 state_dict says 1.0.*argument says 1.2"):
        convert_official(source, tmp_path / "out", variant="1.2")
    with pytest.raises(UserError, match="dataset.*prefix 'Penn' says penn_action.*argument says nw_ucla"):
        convert_official(source, tmp_path / "out", dataset="nw_ucla")
    with pytest.raises(UserError, match="use one of"):
        convert_official(source, tmp_path / "out", dataset="penn")
    (source / "Penn_finetuned_head.pt").unlink()
    with pytest.raises(UserError, match="finetuned_head.pt missing"):
        convert_official(source, tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no official checkpoint files"):
        convert_official(tmp_path / "empty", tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# The Hugging Face cache


def fake_cache(root: Path, source: Path, folder: str, commit: str) -> Path:
    """The huggingface_hub cache layout: blobs named by hash, snapshot files linking to them, refs/main."""
    repo = root / f"models--{HUB_REPO.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / commit / folder
    snapshot.mkdir(parents=True)
    for path in source.rglob("*.pt"):
        blob = repo / "blobs" / sha256(path)
        shutil.copy(path, blob)
        (snapshot / path.name).symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return root


def test_download_finds_the_cached_folder_offline_and_converts_it(tmp_path):
    source, mods = make_official(tmp_path, "penn")
    folder = hub_folder("1.0", "penn_action")
    assert folder == "CascadeFormer_Best_Checkpoints/CascadeFormer_1.0_best_checkpoints/BEST_PENN_ACTION_1_0"
    cache = fake_cache(tmp_path / "cache", source, folder, DEFAULT_REVISION)
    local = download_official("1.0", "penn_action", cache_dir=cache, offline=True)
    assert local == cache / f"models--YusenPeng--CascadeFormerCheckpoints/snapshots/{DEFAULT_REVISION}/{folder}"
    assert download_official(revision="main", cache_dir=cache, offline=True) == local  # via refs/main

    summary = convert_official(local, tmp_path / "out")
    assert summary["provenance"]["hub"] == {"repo": HUB_REPO, "revision": DEFAULT_REVISION, "folder": folder}
    model, _ = converted_model(tmp_path / "out" / "finetuned.safetensors")
    x = torch.randn(1, 7, 13, 2)
    with torch.no_grad():
        torch.testing.assert_close(model(x, None), official_logits(CASES["penn"], mods, x), rtol=0, atol=1e-5)

    with pytest.raises(UserError, match="1.1 and 1.2 ones are expected by analogy"):
        download_official("1.1", "penn_action", cache_dir=cache, offline=True)
    with pytest.raises(UserError, match="not in the cache .* and --offline was given"):
        download_official("1.0", "ntu60_xsub", revision="v2", cache_dir=cache, offline=True)


def test_download_errors_are_one_readable_line(tmp_path):
    with pytest.raises(UserError, match="not in the cache .*--offline was given; run without --offline") as err:
        download_official("1.0", "nw_ucla", cache_dir=tmp_path / "empty", offline=True)
    assert "\n" not in str(err.value)
    # Without --offline the Hub is asked first; HF_HUB_OFFLINE (set by the fixture) refuses the request.
    with pytest.raises(UserError, match="the Hub could not be reached; .*HF_HUB_OFFLINE"):
        download_official("1.0", "nw_ucla", cache_dir=tmp_path / "empty")
    with pytest.raises(UserError, match="unknown dataset 'ucla'"):
        download_official("1.0", "ucla", offline=True)
    with pytest.raises(UserError, match="unknown variant '2.0'"):
        download_official("2.0", offline=True)


def test_download_and_convert_commands(tmp_path):
    from typer.testing import CliRunner

    from cascade_cli.cli import app

    source, mods = make_official(tmp_path, "penn")
    cache = fake_cache(tmp_path / "cache", source, hub_folder("1.0", "penn_action"), DEFAULT_REVISION)
    runner = CliRunner()
    result = runner.invoke(app, ["download", "--dataset", "penn_action", "--cache-dir", str(cache), "--offline",
                                 "--out", str(tmp_path / "dl"), "--eval-cross-attn-heads", "4"])
    assert result.exit_code == 0, result.output
    assert f"finetune checkpoint: {tmp_path / 'dl' / 'finetuned.safetensors'}" in result.output
    assert load_checkpoint(tmp_path / "dl" / "finetuned.safetensors").config.model.fusion_heads == 4

    result = runner.invoke(app, ["convert", str(source), "--out", str(tmp_path / "cv")])
    assert result.exit_code == 0, result.output
    model, _ = converted_model(tmp_path / "cv" / "finetuned.safetensors")
    x = torch.randn(1, 9, 13, 2)
    with torch.no_grad():
        torch.testing.assert_close(model(x, None), official_logits(CASES["penn"], mods, x), rtol=0, atol=1e-5)

    missing = runner.invoke(app, ["download", "--dataset", "nw_ucla", "--cache-dir", str(tmp_path / "empty"),
                                  "--offline", "--out", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "--offline was given" in missing.output
    unknown = runner.invoke(app, ["download", "--variant", "2.0", "--offline"])
    assert unknown.exit_code == 2 and "2.0" in unknown.output
