import pytest
import torch

from cascade_cli.training.masking import apply_mask, draw_mask, masked_mse

T, J = 10, 13
LENGTHS = torch.tensor([10, 6, 3, 1])


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def valid_slots(lengths: torch.Tensor = LENGTHS) -> torch.Tensor:
    frames = torch.arange(T) < lengths[:, None]  # (B, T)
    return frames[..., None].expand(-1, T, J)  # (B, T, J)


def test_joint_slots_hides_exact_count_within_valid_frames():
    hidden, scored = draw_mask("joint_slots", 0.3, LENGTHS, T, J, gen(0))
    assert hidden.shape == scored.shape == (4, T, J) and hidden.dtype == torch.bool
    expected = [max(1, int(0.3 * L * J)) for L in LENGTHS.tolist()]
    assert hidden.sum((1, 2)).tolist() == expected == [39, 23, 11, 3]
    assert not (hidden & ~valid_slots()).any()
    assert torch.equal(scored, hidden)
    # Slots, not joints: the hidden joints differ from frame to frame.
    assert not all(torch.equal(hidden[0, 0], hidden[0, t]) for t in range(1, T))


def test_joints_hides_the_same_joints_in_every_valid_frame():
    hidden, scored = draw_mask("joints", 0.3, LENGTHS, T, J, gen(1))
    n = max(1, int(0.3 * J))
    for b, L in enumerate(LENGTHS.tolist()):
        assert (hidden[b, :L].sum(1) == n).all()
        assert (hidden[b, :L] == hidden[b, 0]).all()
        assert not hidden[b, L:].any()
    assert torch.equal(scored, hidden)
    assert not torch.equal(hidden[0, 0], hidden[1, 0])  # drawn per sample


def test_frames_hides_whole_valid_frames():
    hidden, scored = draw_mask("frames", 0.3, LENGTHS, T, J, gen(2))
    per_frame = hidden.sum(2)  # (B, T)
    assert ((per_frame == 0) | (per_frame == J)).all()
    expected = [max(1, int(0.3 * L)) for L in LENGTHS.tolist()]
    assert (per_frame == J).sum(1).tolist() == expected == [3, 1, 1, 1]
    assert not (hidden & ~valid_slots()).any()
    assert torch.equal(scored, hidden)


def test_none_scores_every_valid_slot_and_hides_nothing():
    hidden, scored = draw_mask("none", 0.3, LENGTHS, T, J, gen(3))
    assert not hidden.any()
    assert torch.equal(scored, valid_slots())


def test_full_ratio_and_tiny_ratio():
    hidden, _ = draw_mask("joint_slots", 1.0, LENGTHS, T, J, gen(0))
    assert torch.equal(hidden, valid_slots())
    hidden, _ = draw_mask("joint_slots", 1e-4, LENGTHS, T, J, gen(0))
    assert hidden.sum((1, 2)).tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("strategy", ["joint_slots", "joints", "frames"])
def test_determined_by_the_generator(strategy):
    lengths = torch.full((8,), T)
    first = draw_mask(strategy, 0.3, lengths, T, J, gen(7))
    again = draw_mask(strategy, 0.3, lengths, T, J, gen(7))
    other = draw_mask(strategy, 0.3, lengths, T, J, gen(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_global_rng_and_unknown_strategy():
    torch.manual_seed(0)
    a, _ = draw_mask("joint_slots", 0.3, LENGTHS, T, J, None)
    torch.manual_seed(0)
    b, _ = draw_mask("joint_slots", 0.3, LENGTHS, T, J, None)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="pretrain.mask"):
        draw_mask("slots", 0.3, LENGTHS, T, J, None)


def test_apply_mask_zeroes_all_coordinates_of_hidden_slots_only():
    x = torch.rand(4, T, J, 3) + 1.0
    hidden, _ = draw_mask("joint_slots", 0.3, LENGTHS, T, J, gen(0))
    masked = apply_mask(x, hidden)
    assert (masked[hidden] == 0).all()
    assert torch.equal(masked[~hidden], x[~hidden])
    assert x.min() >= 1.0  # the input is left untouched


def test_masked_mse_counts_only_scored_coordinates():
    torch.manual_seed(0)
    target = torch.randn(4, T, J, 3)
    _, scored = draw_mask("joint_slots", 0.3, LENGTHS, T, J, gen(0))
    assert masked_mse(target.clone(), target, scored).item() == 0.0

    recon = target + 1.0
    assert masked_mse(recon, target, scored).item() == pytest.approx(1.0)
    unscored = (~scored).nonzero()[0].tolist()
    changed = recon.clone()
    changed[tuple(unscored)] += 100.0
    assert masked_mse(changed, target, scored).item() == pytest.approx(1.0)
    b, t, j = scored.nonzero()[0].tolist()
    changed[b, t, j, 0] += 2.0  # that coordinate's squared error goes from 1 to 9
    expected = 1.0 + 8.0 / (scored.sum().item() * 3)
    assert masked_mse(changed, target, scored).item() == pytest.approx(expected)


def test_masked_mse_pools_over_the_batch():
    target = torch.zeros(2, 2, 2, 1)
    recon = torch.zeros(2, 2, 2, 1)
    recon[0] = 1.0  # sample 0: 3 scored slots with error 1; sample 1: 1 scored slot with error 0
    scored = torch.tensor([[[True, True], [True, False]], [[True, False], [False, False]]])
    assert masked_mse(recon, target, scored).item() == pytest.approx(3 / 4)  # not the per-sample mean 1/2


def test_masked_mse_with_nothing_scored_is_zero_and_differentiable():
    recon = torch.randn(2, 3, J, 3, requires_grad=True)
    loss = masked_mse(recon, torch.zeros(2, 3, J, 3), torch.zeros(2, 3, J, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(recon.grad, torch.zeros_like(recon))


@pytest.mark.parametrize("strategy", ["joint_slots", "joints", "frames", "none"])
def test_a_clip_without_frames_gets_no_mask(strategy):
    hidden, scored = draw_mask(strategy, 0.3, torch.tensor([0, 2]), T, J, gen(0))
    assert not hidden[0].any() and not scored[0].any() and scored[1].any()
