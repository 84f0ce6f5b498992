"""The CPU dropout: same law as nn.Dropout (up to 1/65536), seeded, and swapped in everywhere."""

import math

import pytest
import torch
from torch import nn

from cascade_cli.config import load_config
from cascade_cli.model import build_classifier, build_t1
from cascade_cli.training.fast_dropout import Dropout, MultiheadAttention, drop_mask, use_fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drop_rate_matches_p(p):
    torch.manual_seed(0)
    n = 2_000_000
    rate = drop_mask(torch.Size([n]), p).float().mean().item()
    expected = round(p * 65536) / 65536
    assert abs(rate - expected) < 4 * math.sqrt(p * (1 - p) / n)


def test_mask_has_no_pattern_across_the_four_slices_of_a_word():
    torch.manual_seed(1)
    mask = drop_mask(torch.Size([400_000, 4]), 0.25).float()  # row = one 64-bit word
    rates = mask.mean(0)
    assert torch.all((rates - 0.25).abs() < 0.005), rates
    # Slices of one word are independent: pairwise agreement as for independent draws.
    together = (mask[:, 0] * mask[:, 3]).mean().item()
    assert abs(together - 0.0625) < 0.003


def test_output_is_unbiased_and_zero_where_dropped():
    torch.manual_seed(2)
    x = torch.full((1000, 1000), 3.0)
    out = Dropout(0.1).train()(x)
    kept = out != 0
    assert torch.allclose(out[kept], torch.tensor(3.0 / (1 - 6554 / 65536)))
    assert abs(out.mean().item() - 3.0) < 0.02


def test_seeded_train_mode_and_identity_in_eval():
    x = torch.randn(64, 128)
    layer = Dropout(0.3).train()
    torch.manual_seed(5)
    a = layer(x)
    torch.manual_seed(5)
    assert torch.equal(a, layer(x))
    assert not torch.equal(a, layer(x))  # a new draw each call
    assert torch.equal(layer.eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))


def test_gradient_flows_only_through_kept_elements():
    torch.manual_seed(3)
    x = torch.randn(32, 64, requires_grad=True)
    out = Dropout(0.5).train()(x)
    out.sum().backward()
    scale = 1 / (1 - 32768 / 65536)
    assert torch.equal(x.grad, (out != 0).float() * scale)


def test_bf16_input_stays_bf16():
    x = torch.randn(16, 16, dtype=torch.bfloat16)
    assert Dropout(0.1).train()(x).dtype == torch.bfloat16


def test_models_use_it_and_keep_their_keys():
    cfg = load_config(None, ["model.d_model=32", "model.t1_layers=1", "model.t1_heads=2", "model.ffn_dim=64"])
    for build in (lambda: build_classifier(cfg.model, 13, 2, 5), lambda: build_t1(cfg.model, 13, 2, with_decoder=True)):
        plain = build()  # the builders make PyTorch's own modules; the trainer chooses the swap
        assert {type(m) for m in plain.modules() if isinstance(m, nn.Dropout)} == {nn.Dropout}
        model = use_fast_dropout(build())
        kinds = {type(m) for m in model.modules() if isinstance(m, nn.Dropout)}
        assert kinds == {Dropout}
        # The swap keeps every parameter name (the official checkpoint names of the attention too).
        assert model.state_dict().keys() == plain.state_dict().keys()
    names = use_fast_dropout(build_classifier(cfg.model, 13, 2, 5)).state_dict().keys()
    assert "t1.transformer_encoder.layers.0.self_attn.in_proj_weight" in names
    assert "fusion.cross_attention.out_proj.weight" in names


@pytest.mark.parametrize("fast", [True, False])
def test_the_trainer_swaps_dropout_only_when_the_config_says_so(tiny_dataset, tmp_path, monkeypatch, fast):
    import cascade_cli.training.loop as loop
    from cascade_cli.progress import Reporter
    from cascade_cli.training import pretrain
    from tests.conftest import TINY

    trained = []
    real_fit = loop.fit

    def recording_fit(setup, *args, **kwargs):
        result = real_fit(setup, *args, **kwargs)
        trained.append({type(m) for m in setup.model.modules() if isinstance(m, nn.Dropout)})
        return result

    monkeypatch.setattr("cascade_cli.training.stages.fit", recording_fit)
    cfg = load_config(None, [*TINY, "pretrain.epochs=1", f"fast_cpu_dropout={str(fast).lower()}"],
                      base={"data": {"path": str(tiny_dataset)}})
    pretrain(cfg, tmp_path / "pre", Reporter(quiet=True))
    assert trained == [{Dropout} if fast else {nn.Dropout}]


@pytest.mark.parametrize("additive", [False, True])
@pytest.mark.parametrize("cross", [False, True])
def test_attention_matches_pytorch_when_nothing_is_dropped(monkeypatch, cross, additive):
    import cascade_cli.training.fast_dropout as fast

    torch.manual_seed(4)
    attention = nn.MultiheadAttention(32, 4, dropout=0.1, batch_first=True)
    reference = nn.MultiheadAttention(32, 4, dropout=0.1, batch_first=True)
    reference.load_state_dict(attention.state_dict())
    fast.use_fast_dropout(attention)
    assert type(attention) is fast.MultiheadAttention
    query, context = torch.randn(3, 10, 32), torch.randn(3, 10, 32)
    key = context if cross else query
    pad = torch.arange(10) >= torch.tensor([10, 7, 3])[:, None]
    if additive:  # the form nn.TransformerEncoderLayer hands to its attention
        pad = torch.zeros(pad.shape).masked_fill(pad, float("-inf"))
    monkeypatch.setattr(fast, "drop_mask", lambda shape, p: torch.zeros(shape, dtype=torch.bool))
    ours = attention.train()(query, key, key, key_padding_mask=pad, need_weights=False)[0]
    theirs = reference.eval()(query, key, key, key_padding_mask=pad, need_weights=False)[0]
    monkeypatch.setattr(fast, "dropout", lambda x, p: x)
    unscaled = attention(query, key, key, key_padding_mask=pad, need_weights=False)[0]
    assert torch.allclose(unscaled, theirs, atol=1e-5)
    # With nothing dropped the kept weights are still scaled by 1 / (1 - 6554/65536): the path ran.
    assert not torch.allclose(ours, theirs, atol=1e-3)


def test_attention_drops_weights_in_training_only():
    torch.manual_seed(6)
    attention = MultiheadAttention(32, 4, dropout=0.5, batch_first=True)
    x = torch.randn(2, 12, 32)
    a = attention.train()(x, x, x, need_weights=False)[0]
    b = attention(x, x, x, need_weights=False)[0]
    assert not torch.allclose(a, b)
    assert torch.equal(attention.eval()(x, x, x, need_weights=False)[0], attention(x, x, x, need_weights=False)[0])


def test_classifier_in_training_mode_without_drops_equals_evaluation(monkeypatch):
    import cascade_cli.training.fast_dropout as fast
    from cascade_cli.model import padding_mask

    monkeypatch.setattr(fast, "dropout", lambda x, p: x)
    torch.manual_seed(7)
    cfg = load_config(None, ["model.d_model=32", "model.t1_layers=2", "model.t1_heads=4", "model.ffn_dim=64",
                             "model.fusion=ffn"])
    model = fast.use_fast_dropout(build_classifier(cfg.model, 13, 2, 5))
    x, pad = torch.randn(3, 20, 13, 2), padding_mask(torch.tensor([20, 12, 5]), 20)
    with torch.no_grad():
        trained = model.train()(x, pad)
        evaluated = model.eval()(x, pad)
    assert torch.allclose(trained, evaluated, atol=1e-5)
