"""aggregate_loss, policy_loss, token_log_probs and entropy_from_logits against hand-computed values."""

import math

import pytest
import torch

from grpo.algorithms.losses import aggregate_loss, entropy_from_logits, policy_loss, token_log_probs

# --- aggregation ------------------------------------------------------------------------------
# row 0: 4 tokens summing to 10; row 1: 2 tokens summing to 11 (+ padding holding garbage 100s);
# row 2: no real token (a truncated completion that was masked out).
PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 100.0, 100.0], [100.0, 100.0, 100.0, 100.0]])
MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]])


@pytest.mark.parametrize(
    "mode, kwargs, expected",
    [
        ("token-mean", {}, 21 / 6),  # (10 + 11) / 6 tokens = 3.5
        ("seq-mean-token-mean", {}, 4.0),  # (10/4 + 11/2) / 2 non-empty rows
        ("seq-mean-token-sum", {}, 10.5),  # (10 + 11) / 2 non-empty rows
        ("seq-mean-token-sum-norm", {}, 1.75),  # 21 / (3 rows * T=4)
        ("seq-mean-token-sum-norm", {"max_completion_length": 7}, 1.0),  # 21 / (3 * 7)
    ],
)
def test_aggregation_modes(mode, kwargs, expected):
    assert aggregate_loss(PER_TOKEN, MASK, mode, **kwargs).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_empty_mask_gives_zero_and_a_usable_graph(mode):
    x = torch.ones(2, 3, requires_grad=True)
    loss = aggregate_loss(x, torch.zeros(2, 3), mode)
    loss.backward()
    assert loss.item() == 0.0 and (x.grad == 0).all()


def test_unknown_aggregation_raises():
    with pytest.raises(ValueError, match="unknown loss aggregation 'sum'"):
        aggregate_loss(PER_TOKEN, MASK, "sum")


# --- clipped surrogate -------------------------------------------------------------------------
# One token per row, clip 0.2, token-mean over 4 tokens:
#   row 0: A=+1, ratio 1.5 -> high clip binds: -min(1.5, 1.2) = -1.2
#   row 1: A=-1, ratio 0.5 -> low clip binds:  -min(-0.5, -0.8) = 0.8
#   row 2: A=+1, ratio 0.5 -> unclipped:       -min(0.5, 0.8) = -0.5
#   row 3: A=-1, ratio 1.5 -> unclipped (pessimistic side): -min(-1.5, -1.2) = 1.5
ADV = torch.tensor([1.0, -1.0, 1.0, -1.0])
RATIOS = [1.5, 0.5, 0.5, 1.5]


def _run(ratios, adv, **kwargs):
    logp = torch.tensor([[math.log(r)] for r in ratios], requires_grad=True)  # [N, 1]
    old = torch.zeros_like(logp)
    loss, stats = policy_loss(logp, old, adv, torch.ones_like(logp), **kwargs)
    loss.backward()
    return loss.item(), stats, logp.grad[:, 0]


def test_symmetric_clip_low_and_high_bind():
    loss, stats, grad = _run(RATIOS, ADV)
    assert loss == pytest.approx((-1.2 + 0.8 - 0.5 + 1.5) / 4, abs=1e-6)  # 0.15
    assert stats["clip_frac/low"].item() == 0.25
    assert stats["clip_frac/high"].item() == 0.25
    assert stats["clip_frac/region"].item() == 0.5
    assert stats["ratio/mean"].item() == pytest.approx(1.0)
    assert stats["ratio/min"].item() == pytest.approx(0.5)
    assert stats["ratio/max"].item() == pytest.approx(1.5)
    assert stats["loss/policy"].item() == pytest.approx(0.15, abs=1e-6)
    # clipped tokens get no gradient; unclipped: d(-A * ratio)/dlogp / 4 = -A * ratio / 4
    torch.testing.assert_close(grad, torch.tensor([0.0, 0.0, -0.125, 0.375]))


def test_clip_higher():
    loss, _, _ = _run(RATIOS, ADV, clip_high=0.28)  # row 0 becomes -1.28, the rest unchanged
    assert loss == pytest.approx((-1.28 + 0.8 - 0.5 + 1.5) / 4, abs=1e-6)  # 0.13


def test_dual_clip_bounds_negative_advantage_tokens():
    # row 0: A=-1, ratio 4 -> 4.0 without dual clip, min(4, 3) = 3 with c=3 (bound binds, no gradient)
    # row 1: A=-1, ratio 1.5 -> 1.5 < 3: unchanged
    # row 2: A=+1, ratio 4 -> dual clip never applies to A>0: -1.2
    adv = torch.tensor([-1.0, -1.0, 1.0])
    plain, _, _ = _run([4.0, 1.5, 4.0], adv)
    assert plain == pytest.approx((4.0 + 1.5 - 1.2) / 3, abs=1e-6)
    loss, stats, grad = _run([4.0, 1.5, 4.0], adv, dual_clip=3.0)
    assert loss == pytest.approx((3.0 + 1.5 - 1.2) / 3, abs=1e-6)
    assert stats["clip_frac/dual"].item() == pytest.approx(1 / 3)
    torch.testing.assert_close(grad, torch.tensor([0.0, 0.5, 0.0]))  # row 1: 1.5 / 3


def test_sequence_level_ratio_gspo():
    # log-ratios 0.1 and 0.3 on the real tokens (padding 5.0 ignored): mean 0.2, s = e^0.2 = 1.2214028 on
    # every real token. A=+1 > clip 0.2: loss -1.2 (clipped). With clip_high 0.28 unclipped: -1.2214028,
    # gradient -A * s / 2 tokens on each real token.
    logp = torch.tensor([[0.1, 0.3, 5.0]], requires_grad=True)
    old = torch.zeros(1, 3)
    mask = torch.tensor([[1, 1, 0]])
    adv = torch.tensor([1.0])
    loss, stats = policy_loss(logp, old, adv, mask, ratio_level="sequence")
    assert loss.item() == pytest.approx(-1.2, abs=1e-6)
    assert stats["ratio/mean"].item() == pytest.approx(1.2214028, abs=1e-6)
    assert stats["clip_frac/high"].item() == 1.0
    loss, _ = policy_loss(logp, old, adv, mask, ratio_level="sequence", clip_high=0.28)
    loss.backward()
    assert loss.item() == pytest.approx(-1.2214028, abs=1e-6)
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.6107014, -0.6107014, 0.0]]))


def test_kl_term_added_per_token():
    # A = 0, ratio 1: the loss is beta * token-mean(k3) = 0.1 * (0.1065307 + 0.7182818 + 0) / 3
    logp = torch.tensor([[-1.0, -2.0, -0.5]])
    ref = torch.tensor([[-1.5, -1.0, -0.5]])
    mask = torch.ones(1, 3)
    loss, stats = policy_loss(logp, logp, torch.zeros(1), mask, ref_logp=ref, kl_beta=0.1)
    assert loss.item() == pytest.approx(0.02749375, abs=1e-7)
    assert stats["kl"].item() == pytest.approx(0.2749375, abs=1e-6)
    # with the importance-ratio correction (TRL use_bias_correction_kl) and ratio 2: twice that
    loss, _ = policy_loss(
        logp, logp - math.log(2), torch.zeros(1), mask, ref_logp=ref, kl_beta=0.1, kl_bias_correction=True
    )
    assert loss.item() == pytest.approx(0.0549875, abs=1e-6)
    # beta 0: KL logged, not in the loss
    loss, stats = policy_loss(logp, logp, torch.zeros(1), mask, ref_logp=ref)
    assert loss.item() == 0.0 and "kl" in stats


def test_entropy_bonus_and_token_weights():
    logp = torch.zeros(1, 3)
    mask = torch.ones(1, 3)
    entropy = torch.tensor([[1.0, 2.0, 3.0]])
    # A=1, ratio 1: surrogate -1 per token; bonus -0.01 * mean entropy 2 = -0.02
    loss, stats = policy_loss(logp, logp, torch.ones(1), mask, entropy=entropy, entropy_coef=0.01)
    assert loss.item() == pytest.approx(-1.02, abs=1e-6)
    assert stats["entropy"].item() == pytest.approx(2.0)
    assert stats["loss/policy"].item() == pytest.approx(-1.0)
    # token weights [1, 0, 1] drop the middle token's surrogate; the token-mean still divides by 3
    loss, _ = policy_loss(logp, logp, torch.ones(1), mask, token_weights=torch.tensor([[1.0, 0.0, 1.0]]))
    assert loss.item() == pytest.approx(-2 / 3, abs=1e-6)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
def test_on_policy_gradient_equals_reinforce(mode, ratio_level):
    """With old_logp = logp.detach() (ratio 1) the surrogate's gradient is REINFORCE's: -A * logp,
    aggregated the same way (GSPO's sequence ratio too, since its value is 1 on every token)."""
    torch.manual_seed(0)
    logp = (-3 * torch.rand(4, 6)).requires_grad_()
    adv = torch.randn(4)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    loss, _ = policy_loss(logp, logp.detach(), adv, mask, loss_agg=mode, ratio_level=ratio_level)
    (grad,) = torch.autograd.grad(loss, logp)
    reinforce = aggregate_loss(-adv[:, None] * logp, mask, mode)
    (expected,) = torch.autograd.grad(reinforce, logp)
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(loss, aggregate_loss(-adv[:, None].expand(4, 6), mask, mode))  # value: -A * 1


def test_bad_options_raise():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        policy_loss(x, x, torch.ones(1), x + 1, dual_clip=1.0)
    with pytest.raises(ValueError, match="unknown ratio_level 'seq'"):
        policy_loss(x, x, torch.ones(1), x + 1, ratio_level="seq")
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        policy_loss(x, x, torch.ones(1), x + 1, loss_agg="mean")


# --- log-probs and entropy from logits --------------------------------------------------------
# logits [0, 0, ln 2] -> probabilities [1/4, 1/4, 1/2]; entropy = 0.5 ln 4 + 0.5 ln 2 = 1.0397208.
# At temperature 2: weights [1, 1, sqrt 2], p(2) = 1.4142136 / 3.4142136 = 0.4142136, log = -0.8813736.
LOGITS = torch.tensor([[[0.0, 0.0, math.log(2)], [0.0, 0.0, math.log(2)]]])  # [1, 2, 3]
TOKENS = torch.tensor([[2, 0]])


def test_token_log_probs_by_hand():
    torch.testing.assert_close(token_log_probs(LOGITS, TOKENS), torch.tensor([[math.log(0.5), math.log(0.25)]]))
    assert token_log_probs(LOGITS, TOKENS, temperature=2.0)[0, 0].item() == pytest.approx(-0.8813736, abs=1e-6)


def test_entropy_by_hand():
    torch.testing.assert_close(entropy_from_logits(LOGITS), torch.tensor([[1.0397208, 1.0397208]]))


def test_logits_helpers_match_torch_and_keep_half_precision_exact():
    torch.manual_seed(0)
    logits = 4 * torch.randn(3, 5, 11)
    tokens = torch.randint(0, 11, (3, 5))
    ref = torch.log_softmax(logits / 0.7, -1).gather(-1, tokens[..., None])[..., 0]
    torch.testing.assert_close(token_log_probs(logits, tokens, temperature=0.7), ref)
    dist = torch.distributions.Categorical(logits=logits)
    torch.testing.assert_close(entropy_from_logits(logits), dist.entropy())
    # bf16 logits are computed in float32 row by row: identical to the float32 result on the same values
    half = logits.bfloat16()
    torch.testing.assert_close(token_log_probs(half, tokens), token_log_probs(half.float(), tokens))
    torch.testing.assert_close(entropy_from_logits(half), entropy_from_logits(half.float()))
    assert token_log_probs(half, tokens).dtype == torch.float32
