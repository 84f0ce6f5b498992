import pytest
import torch
from torch import nn

from cascade_cli.config import ModelConfig
from cascade_cli.model import Encoder, build_classifier, build_t1, padding_mask, set_t1_trainable

J, C, K = 4, 3, 7
VARIANTS = [("1.0", "paper"), ("1.1", "paper"), ("1.2", "paper"), ("1.2", "code")]
ENC = ["self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
       "self_attn.out_proj.bias", "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
       "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"]


def small(**overrides) -> ModelConfig:
    # d = 24 splits into J = 4 joints of width 6, divisible by 2 heads.
    return ModelConfig(**{"d_model": 24, "t1_layers": 2, "t1_heads": 2, "ffn_dim": 32, "max_frames": 16,
                          **overrides})


def enc_keys(prefix: str, layers: int) -> set[str]:
    return {f"{prefix}layers.{i}.{k}" for i in range(layers) for k in ENC}


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------
# Shapes and state_dict keys


@pytest.mark.parametrize("variant,form", VARIANTS)
def test_t1_shapes_and_keys(variant, form):
    torch.manual_seed(0)
    t1 = build_t1(small(variant=variant, spatial_form=form), J, C, with_decoder=True)
    x = torch.randn(2, 9, J, C)
    tokens = t1(x)
    assert tokens.shape == (2, 9, 24)
    assert t1.reconstruct(tokens).shape == (2, 9, J, C)

    expected = {"pos_embedding", "reconstruction_head.weight", "reconstruction_head.bias"}
    expected |= enc_keys("transformer_encoder.", 2)
    if not (variant == "1.2" and form == "paper"):
        expected |= {"features.joint_embedding.weight", "features.joint_embedding.bias"}
    if variant == "1.1":
        expected |= {f"features.joint_conv.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    if variant == "1.2":
        expected |= {"features.spatial_transformer.joint_embedding.weight",
                     "features.spatial_transformer.joint_embedding.bias"}
        expected |= enc_keys("features.spatial_transformer.encoder.", 1)
    if form == "code" and variant == "1.2":
        expected |= {"features.spatial_transformer.output_proj.weight",
                     "features.spatial_transformer.output_proj.bias"}
    state = t1.state_dict()
    assert set(state) == expected
    width = 24 // J if (variant, form) == ("1.2", "paper") else 24
    if variant == "1.2":
        assert state["features.spatial_transformer.joint_embedding.weight"].shape == (width, C)
        assert state["features.spatial_transformer.encoder.layers.0.linear1.weight"].shape == (32, width)


@pytest.mark.parametrize("variant,form", VARIANTS)
@pytest.mark.parametrize("fusion", ["plain", "ffn"])
@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_classifier_shapes(variant, form, fusion, head):
    model = build_classifier(small(variant=variant, spatial_form=form, fusion=fusion, head=head), J, C, K)
    x = torch.randn(3, 8, J, C)
    mask = padding_mask(torch.tensor([8, 5, 2]), 8)
    assert model(x, mask).shape == (3, K)
    assert model.embed(x, mask).shape == (3, 24)
    assert not any(k.startswith("reconstruction_head") for k in model.t1.state_dict())


def test_fusion_head_and_t2_keys():
    plain = build_classifier(small(), J, C, K)
    ntu = build_classifier(small(fusion="ffn", head="mlp", t2_layers=3), J, C, K)
    attn = {f"cross_attention.{k}" for k in ("in_proj_weight", "in_proj_bias", "out_proj.weight",
                                             "out_proj.bias")}
    assert set(plain.fusion.state_dict()) == attn | {"norm.weight", "norm.bias"}
    assert set(ntu.fusion.state_dict()) == attn | {f"{m}.{p}" for m in ("norm1", "norm2", "ffn.0", "ffn.3")
                                                   for p in ("weight", "bias")}
    assert set(plain.head.state_dict()) == {"fc.weight", "fc.bias"}
    assert set(ntu.head.state_dict()) == {f"net.{i}.{p}" for i in (0, 2, 5) for p in ("weight", "bias")}
    assert ntu.head.state_dict()["net.5.weight"].shape == (K, 24)
    assert set(plain.t2.state_dict()) == enc_keys("encoder.", 2)
    assert set(ntu.t2.state_dict()) == enc_keys("encoder.", 3)
    assert plain.fusion.cross_attention.dropout == 0.0 and ntu.fusion.cross_attention.dropout == 0.1


@pytest.mark.parametrize("decoder,keys", [
    ("linear", {"weight", "bias"}),
    ("mlp", {"0.weight", "0.bias", "2.weight", "2.bias"}),
    ("mlp_residual", {f"{m}.{p}" for m in ("fc1", "fc2", "proj_residual") for p in ("weight", "bias")}),
])
def test_decoders(decoder, keys):
    t1 = build_t1(small(decoder=decoder), J, C, with_decoder=True)
    assert set(t1.reconstruction_head.state_dict()) == keys
    assert t1.reconstruct(torch.randn(2, 5, 24)).shape == (2, 5, J, C)
    with pytest.raises(RuntimeError, match="without a decoder"):
        build_t1(small(), J, C, with_decoder=False).reconstruct(torch.randn(2, 5, 24))


# ---------------------------------------------------------------------------------------------
# Semantics


def test_encoder_is_post_norm_without_final_norm():
    torch.manual_seed(0)
    enc = Encoder(8, 2, 1, 16, 0.1).eval()
    layer = enc.layers[0]
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        h = layer.norm1(x + layer.self_attn(x, x, x, need_weights=False)[0])
        expected = layer.norm2(h + layer.linear2(torch.relu(layer.linear1(h))))
        assert torch.allclose(enc(x), expected, atol=1e-5)
    assert layer.norm1.eps == 1e-5


def test_joint_conv_runs_along_joints_and_flattens_joint_major():
    t1 = build_t1(small(variant="1.1"), J, C, with_decoder=False)
    conv = t1.features.joint_conv
    with torch.no_grad():  # make the conv an identity; a wrong reshape would then scramble coordinates
        conv[0].weight.zero_()
        conv[0].weight[:, :, 1] = torch.eye(C)
        conv[2].weight[:, :, 0] = torch.eye(C)
        conv[0].bias.zero_()
        conv[2].bias.zero_()
        x = torch.rand(2, 3, J, C) + 0.1
        assert torch.allclose(t1.features(x), t1.features.joint_embedding(x.flatten(2)), atol=1e-6)
        conv[0].weight[:, :, 1] = torch.eye(C).flip(0)  # swapping channels must change the output
        assert not torch.allclose(t1.features(x), t1.features.joint_embedding(x.flatten(2)), atol=1e-3)


def test_pos_init():
    torch.manual_seed(0)
    assert build_t1(small(pos_init="zeros"), J, C, False).pos_embedding.abs().sum() == 0
    pos = build_t1(small(max_frames=2000), J, C, False).pos_embedding
    assert pos.shape == (1, 2000, 24) and abs(pos.std().item() - 0.02) < 0.002


def test_padding_mask():
    assert padding_mask(torch.tensor([3, 1, 0]), 3).tolist() == [
        [False, False, False], [False, True, True], [True, True, True]]


def test_config_errors():
    t1 = build_t1(small(max_frames=6), J, C, False)
    with pytest.raises(ValueError, match="model.max_frames"):
        t1(torch.randn(1, 7, J, C))
    with pytest.raises(ValueError, match="model.d_model"):
        build_t1(small(variant="1.2", d_model=26, t1_heads=2), J, C, False)
    with pytest.raises(ValueError, match="model.spatial_heads"):
        build_t1(small(variant="1.2", spatial_heads=4), J, C, False)  # width 6, 4 heads
    with pytest.raises(ValueError, match="model.t1_heads"):
        build_t1(small(t1_heads=5), J, C, False)
    with pytest.raises(ValueError, match="model.t2_heads"):
        build_classifier(small(t2_heads=5), J, C, K)


@pytest.mark.parametrize("variant,form", VARIANTS)
@pytest.mark.parametrize("fusion", ["plain", "ffn"])
def test_padding_invariance(variant, form, fusion):
    """A clip's logits must not depend on the clips batched with it (reference Part C, row 2)."""
    torch.manual_seed(0)
    cfg = small(variant=variant, spatial_form=form, fusion=fusion, head="mlp")
    model = build_classifier(cfg, J, C, K).eval()
    lengths = torch.tensor([9, 5, 7])
    batch = torch.randn(3, 9, J, C)
    batch[padding_mask(lengths, 9)] = 0.0
    clip = batch[1:2, :5]
    with torch.no_grad():
        alone_logits, alone_embed = model(clip, padding_mask(lengths[1:2], 5)), model.embed(clip)
        mask = padding_mask(lengths, 9)
        logits, embed = model(batch, mask), model.embed(batch, mask)
        assert torch.allclose(logits[1], alone_logits[0], atol=1e-5)
        assert torch.allclose(embed[1], alone_embed[0], atol=1e-5)
        # Sanity: without the mask the padding leaks in (the official behaviour), so the check can fail.
        assert not torch.allclose(model(batch)[1], alone_logits[0], atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Parameter counts (reference B.4), built on the meta device so nothing is allocated

PENN = dict(d_model=256, t1_layers=4, t1_heads=8, ffn_dim=2048)
NTU_CS = dict(t1_layers=16, t1_heads=16, max_frames=64, fusion="ffn", head="mlp")


@pytest.mark.parametrize("cfg,joints,channels,classes,t1_total,total", [
    (dict(PENN, max_frames=1000), 13, 2, 15, 5_529_882, 11_051_023),
    (dict(PENN, variant="1.1"), 13, 2, 15, 5_798_190, 11_319_331),
    (dict(PENN, variant="1.2", spatial_form="code"), 13, 2, 15, 7_114_524, 12_635_665),
    (dict(PENN), 20, 3, 10, 5_815_612, 11_326_730),  # N-UCLA 1.0
    (dict(PENN, variant="1.2", spatial_form="code"), 20, 3, 10, 7_132_479, 12_643_597),  # N-UCLA 1.2
    (dict(NTU_CS, d_model=768), 25, 3, 60, 88_388_939, 180_739_900),
    (dict(NTU_CS, d_model=800, variant="1.2", spatial_form="paper"), 25, 3, 60, 93_785_675, 191_800_828),
])
def test_parameter_counts(cfg, joints, channels, classes, t1_total, total):
    model_cfg = ModelConfig(**cfg)
    with torch.device("meta"):
        t1 = build_t1(model_cfg, joints, channels, with_decoder=True)
        model = build_classifier(model_cfg, joints, channels, classes)
    assert count(t1) == t1_total
    assert count(model) == total
    assert count(model) == count(t1) - count(t1.reconstruction_head) + count(model.t2) + \
        count(model.fusion) + count(model.head)


def test_penn_total_matches_the_quoted_11m():
    with torch.device("meta"):
        model = build_classifier(ModelConfig(**PENN, max_frames=1000), 13, 2, 15)
    assert abs(count(model) - 11.0e6) / 11.0e6 < 0.01


# ---------------------------------------------------------------------------------------------
# Finetuning modes of T1


def trainable(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_set_t1_trainable():
    model = build_classifier(small(variant="1.1", t1_layers=3), J, C, K)
    everything = {name for name, _ in model.named_parameters()}
    rest = {name for name in everything if not name.startswith("t1.")}

    def layers(*indices: int) -> set[str]:
        prefixes = tuple(f"t1.transformer_encoder.layers.{i}." for i in indices)
        return {name for name in everything if name.startswith(prefixes)}

    set_t1_trainable(model, "last_k", 1)
    assert trainable(model) == rest | layers(2)
    set_t1_trainable(model, "last_k", 2)
    assert trainable(model) == rest | layers(1, 2)
    set_t1_trainable(model, "frozen", 1)
    assert trainable(model) == rest
    model.train()
    assert not model.t1.training and not any(m.training for m in model.t1.modules())
    assert model.t2.training and model.fusion.training and model.head.training
    model.eval()
    assert not model.t2.training

    set_t1_trainable(model, "full", 1)
    assert trainable(model) == everything
    model.train()
    assert model.t1.training and model.t1.transformer_encoder.layers[0].dropout.training

    with pytest.raises(ValueError, match="finetune.t1_trainable_layers"):
        set_t1_trainable(model, "last_k", 4)


def test_frozen_t1_gives_deterministic_features_in_train_mode():
    torch.manual_seed(0)
    model = build_classifier(small(dropout=0.5), J, C, K)
    set_t1_trainable(model, "frozen", 1)
    model.train()
    x = torch.randn(2, 6, J, C)
    assert torch.equal(model.t1(x), model.t1(x))

