"""Our policy_loss against TRL 1.16's own loss code on identical random inputs.

TRL's loss lives in a method, `trl/trainer/grpo_trainer.py::GRPOTrainer._compute_loss(self, model,
inputs)`, which only reads attributes of `self` and gets log-probs from
`self._get_per_token_logps_and_entropies`. We call that unbound method on a small stand-in `self`
(one process, no gradient accumulation, no vLLM) whose log-prob hook returns our tensors, so TRL's
real arithmetic runs. TRL's top-entropy mask comes from its own `get_high_entropy_mask` the same way.

Mapping: TRL loss_type "grpo" = seq-mean-token-mean, "dapo"/"bnpo" = token-mean (one process,
one accumulation step), "dr_grpo" = seq-mean-token-sum-norm with max_completion_length, "luspo" =
seq-mean-token-sum. TRL's KL is k3, multiplied by the ratio when `use_bias_correction_kl`
(TRL's default True): we pass kl_bias_correction to match, both ways.
"""

import types
from collections import defaultdict

import pytest
import torch

grpo_trainer = pytest.importorskip("trl.trainer.grpo_trainer", reason="trl is not installed")

from grpo.algorithms.losses import policy_loss  # noqa: E402
from grpo.algorithms.sampling import top_entropy_token_mask  # noqa: E402

TRL_TO_AGG = {
    "grpo": "seq-mean-token-mean",
    "dapo": "token-mean",
    "bnpo": "token-mean",
    "dr_grpo": "seq-mean-token-sum-norm",
    "luspo": "seq-mean-token-sum",
}
N, T, MAX_LEN = 6, 5, 8  # B=2 prompts x G=3; max_completion_length > T on purpose


def _inputs(seed):
    g = torch.Generator().manual_seed(seed)
    logp = -3 * torch.rand(N, T, generator=g)
    old = logp + 0.3 * torch.randn(N, T, generator=g)  # ratios spread around 1: both clips bind
    ref = logp + 0.2 * torch.randn(N, T, generator=g)
    entropy = 2 * torch.rand(N, T, generator=g)
    lengths = torch.tensor([5, 3, 4, 1, 5, 2])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    adv = torch.randn(N, generator=g)
    return logp, old, ref, entropy, mask, adv


def _identity(x, *args, **kwargs):
    return x


def _trl_loss(
    loss_type,
    logp,
    old,
    ref,
    entropy,
    mask,
    adv,
    *,
    beta,
    bias_correction,
    eps_low=0.2,
    eps_high=0.2,
    level="token",
    entropy_coef=0.0,
    top_entropy_quantile=1.0,
):
    accelerator = types.SimpleNamespace(
        num_processes=1,
        sync_gradients=True,
        pad_across_processes=lambda x, **kw: x,
        gather=_identity,
        gather_for_metrics=_identity,
        reduce=_identity,
    )
    args = types.SimpleNamespace(use_bias_correction_kl=bias_correction, delta=None, steps_per_generation=1)
    fake = types.SimpleNamespace(
        args=args,
        accelerator=accelerator,
        model=types.SimpleNamespace(training=True),
        loss_type=loss_type,
        beta=beta,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        importance_sampling_level=level,
        top_entropy_quantile=top_entropy_quantile,
        off_policy_mask_threshold=None,
        use_vllm=False,
        current_gradient_accumulation_steps=1,
        max_completion_length=MAX_LEN,
        aux_loss_enabled=False,
        entropy_coef=entropy_coef,
        _entropy_bonus_enabled=entropy_coef != 0.0,
        use_adaptive_entropy=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, entropy, None),
    )
    fake.get_high_entropy_mask = types.MethodType(grpo_trainer.GRPOTrainer.get_high_entropy_mask, fake)
    inputs = {
        "prompt_ids": torch.zeros(N, 1, dtype=torch.long),
        "prompt_mask": torch.ones(N, 1, dtype=torch.long),
        "completion_ids": torch.zeros(N, T, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    loss = grpo_trainer.GRPOTrainer._compute_loss(fake, None, inputs)
    return loss, fake._metrics["train"]


def _both(
    loss_type, seed=0, *, beta, bias_correction, eps_high=0.2, level="token", entropy_coef=0.0, top_entropy_quantile=1.0
):
    """Run TRL and ours on fresh leaves of the same tensors; return losses, metrics/stats, grads."""
    logp, old, ref, entropy, mask, adv = _inputs(seed)
    results = []
    for ours in (False, True):
        lp, ent = logp.clone().requires_grad_(), entropy.clone().requires_grad_()
        if ours:
            weights = None
            if top_entropy_quantile < 1.0:
                weights = top_entropy_token_mask(ent, mask, top_entropy_quantile).float()
            loss, info = policy_loss(
                lp,
                old,
                adv,
                mask,
                clip_low=0.2,
                clip_high=eps_high,
                ratio_level=level,
                loss_agg=TRL_TO_AGG[loss_type],
                max_completion_length=MAX_LEN,
                ref_logp=ref,
                kl_beta=beta,
                kl_estimator="k3",
                kl_bias_correction=bias_correction,
                entropy=ent,
                entropy_coef=entropy_coef,
                token_weights=weights,
            )
        else:
            loss, info = _trl_loss(
                loss_type,
                lp,
                old,
                ref,
                ent,
                mask,
                adv,
                beta=beta,
                bias_correction=bias_correction,
                eps_high=eps_high,
                level=level,
                entropy_coef=entropy_coef,
                top_entropy_quantile=top_entropy_quantile,
            )
        loss.backward()
        results.append((loss.detach(), info, lp.grad, ent.grad))
    return results


@pytest.mark.parametrize("loss_type", list(TRL_TO_AGG))
@pytest.mark.parametrize("bias_correction", [False, True])
def test_loss_and_gradient_match_trl(loss_type, bias_correction):
    (trl_loss, metrics, trl_grad, _), (loss, stats, grad, _) = _both(
        loss_type, beta=0.04, bias_correction=bias_correction
    )
    torch.testing.assert_close(loss, trl_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad, trl_grad, atol=1e-6, rtol=0)
    # the clip fractions and KL we log are TRL's (masked means over all real tokens)
    assert stats["kl"].item() == pytest.approx(metrics["kl"][0], abs=1e-6)
    assert stats["clip_frac/low"].item() == pytest.approx(metrics["clip_ratio/low_mean"][0], abs=1e-6)
    assert stats["clip_frac/high"].item() == pytest.approx(metrics["clip_ratio/high_mean"][0], abs=1e-6)
    assert stats["clip_frac/region"].item() == pytest.approx(metrics["clip_ratio/region_mean"][0], abs=1e-6)
    assert stats["clip_frac/low"].item() > 0 and stats["clip_frac/high"].item() > 0  # both clips bind here


def test_clip_higher_matches_trl_dapo():
    (trl_loss, _, trl_grad, _), (loss, _, grad, _) = _both("dapo", beta=0.04, bias_correction=True, eps_high=0.28)
    torch.testing.assert_close(loss, trl_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad, trl_grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_sequence_level_gspo_matches_trl(loss_type):
    # TRL computes one ratio per sequence and broadcasts it; our sg form has the same value and gradient.
    # (Not with use_bias_correction_kl: there the ratio's gradient path differs, see policy_loss.)
    (trl_loss, _, trl_grad, _), (loss, _, grad, _) = _both(
        loss_type, beta=0.04, bias_correction=False, level="sequence"
    )
    torch.testing.assert_close(loss, trl_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad, trl_grad, atol=1e-6, rtol=0)


def test_entropy_bonus_matches_trl_with_token_mean():
    (trl_loss, _, trl_grad, trl_ent_grad), (loss, _, grad, ent_grad) = _both(
        "dapo", beta=0.04, bias_correction=True, entropy_coef=0.01
    )
    torch.testing.assert_close(loss, trl_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad, trl_grad, atol=1e-6, rtol=0)
    torch.testing.assert_close(ent_grad, trl_ent_grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_top_entropy_mask_matches_trl(loss_type):
    (trl_loss, _, trl_grad, _), (loss, _, grad, _) = _both(
        loss_type, beta=0.04, bias_correction=True, top_entropy_quantile=0.4
    )
    torch.testing.assert_close(loss, trl_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad, trl_grad, atol=1e-6, rtol=0)
