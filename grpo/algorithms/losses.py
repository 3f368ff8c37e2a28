"""Policy-gradient loss for GRPO-style training: clipped surrogate, KL and entropy terms, and the
ways of averaging a per-token loss into a scalar.

Conventions: N sequences, T completion positions, `mask` [N, T] is 1 on real completion tokens.
Formulas follow TRL `GRPOTrainer._compute_loss` and verl `core_algos.compute_policy_loss_vanilla`
(shared/research/anchors_algorithms.md section 5); tests/test_trl_crosscheck.py pins TRL.
"""

from __future__ import annotations

import torch
from torch import Tensor

from grpo.algorithms.kl import kl_divergence
from grpo.algorithms.names import LOSS_AGG_MODES, RATIO_LEVELS  # noqa: F401  (re-exported)


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x [N, T] over positions where mask is 1; 0 when the mask is empty."""
    m = mask.to(x.dtype if x.is_floating_point() else torch.float32)
    return (x * m).sum() / m.sum().clamp(min=1)


def aggregate_loss(
    per_token: Tensor, mask: Tensor, mode: str = "token-mean", *, max_completion_length: int | None = None
) -> Tensor:
    """Average a per-token loss into a scalar.

    Args:
        per_token: [N, T] loss per token (padding values are ignored).
        mask: [N, T] 1 on real completion tokens.
        mode: one of LOSS_AGG_MODES.
            "token-mean": sum(l*m) / sum(m). Every token weighs the same (DAPO; TRL "dapo"/"bnpo").
            "seq-mean-token-mean": mean over sequences of the per-sequence token mean (original
                GRPO; TRL "grpo"). Every sequence weighs the same.
            "seq-mean-token-sum": mean over sequences of the per-sequence token sum (TRL "luspo").
            "seq-mean-token-sum-norm": sum(l*m) / (N * max_completion_length): a constant
                normaliser, no length bias (Dr. GRPO; TRL "dr_grpo").
        max_completion_length: the Dr. GRPO constant; defaults to T.

    Rows with no real token (e.g. a truncated completion that was masked out) contribute 0 and,
    in the two seq-mean modes, are left out of the mean over sequences, so masking a row does not
    shrink the others' weight (verl's choice; TRL divides by all N instead: identical whenever
    every row has a token). In "seq-mean-token-sum-norm" the denominator stays N * max length,
    constant by design. An all-empty mask gives 0, never NaN.

    Returns:
        0-dim loss.
    """
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss aggregation {mode!r}; choose one of {LOSS_AGG_MODES}")
    m = mask.to(per_token.dtype)  # [N, T]
    masked = per_token * m  # [N, T]
    if mode == "token-mean":
        return masked.sum() / m.sum().clamp(min=1)
    if mode == "seq-mean-token-sum-norm":
        length = per_token.shape[1] if max_completion_length is None else max_completion_length
        return masked.sum() / (per_token.shape[0] * length)
    tokens = m.sum(-1)  # [N]
    seq = masked.sum(-1)  # [N]; 0 for empty rows
    if mode == "seq-mean-token-mean":
        seq = seq / tokens.clamp(min=1)
    return seq.sum() / (tokens > 0).sum().clamp(min=1)


def importance_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor, ratio_level: str = "token") -> Tensor:
    """[N, T] pi_theta / pi_old per token ("token"), or GSPO's sequence ratio on every token
    ("sequence"; see `policy_loss`). The log-ratio is clamped to [-20, 20] before exp as in verl/EasyR1."""
    log_ratio = (logp - old_logp).clamp(-20.0, 20.0)  # [N, T]
    if ratio_level == "sequence":
        m = mask.to(logp.dtype)  # [N, T]
        seq_log_ratio = (log_ratio * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1)  # [N, 1]
        log_ratio = seq_log_ratio.detach() + logp - logp.detach()  # [N, T], value = seq_log_ratio
    return log_ratio.exp()


def clipped_surrogate(
    ratio: Tensor, adv: Tensor, clip_low: float, clip_high: float, dual_clip: float | None
) -> tuple[Tensor, Tensor | None]:
    """PPO's clipped surrogate to minimise, max(-r*A, -clip(r)*A), per token, with the dual clip
    bounding A < 0 tokens at -dual_clip*A. Returns ([N, T] loss terms, [N, T] where the dual clip binds)."""
    surrogate = -adv * ratio  # [N, T]
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # [N, T]
    pg = torch.maximum(surrogate, clipped)  # [N, T]
    if dual_clip is None:
        return pg, None
    bound = -adv * dual_clip  # [N, 1] or [N, T]
    dual_binds = (adv < 0) & (pg > bound)  # [N, T]
    return torch.where(adv < 0, torch.minimum(pg, bound), pg), dual_binds


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    dual_clip: float | None = None,
    ratio_level: str = "token",
    loss_agg: str = "token-mean",
    max_completion_length: int | None = None,
    ref_logp: Tensor | None = None,
    kl_beta: float = 0.0,
    kl_estimator: str = "k3",
    kl_bias_correction: bool = False,
    entropy: Tensor | None = None,
    entropy_coef: float = 0.0,
    token_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate with optional dual clip, KL penalty and entropy bonus.

    Args:
        logp: [N, T] log-probs of the sampled tokens under the current policy (with grad).
        old_logp: [N, T] the same under the sampling policy (no grad). `logp.detach()` gives
            ratio 1: the on-policy case, where the loss is plain REINFORCE with advantages.
        advantages: [N] one per sequence (or [N, T] per token).
        mask: [N, T] 1 on real completion tokens.
        clip_low, clip_high: ratio clipped to [1 - clip_low, 1 + clip_high]; clip_high defaults to
            clip_low (symmetric PPO); DAPO's clip-higher is 0.2 / 0.28.
        dual_clip: c > 1 bounds the loss of an A < 0 token at -c*A however large the ratio gets
            (Ye et al. 2019; verl clip_ratio_c). None = off.
        ratio_level: "token" (PPO/GRPO) or "sequence" (GSPO: the ratio is the geometric mean of
            the sequence's token ratios; written as sg[s_i] * pi_t / sg[pi_t] so its value is s_i on
            every token while the gradient flows through each token, as verl "gspo").
        loss_agg, max_completion_length: see `aggregate_loss`.
        ref_logp: [N, T] reference log-probs; enables the KL term and the "kl" stat.
        kl_beta: KL coefficient; added per token before aggregation (as TRL).
        kl_estimator: see `kl_divergence`.
        kl_bias_correction: multiply the KL estimate by the importance ratio (TRL
            use_bias_correction_kl, DeepSeek-V3.2). In sequence mode the ratio carries GSPO's
            per-token gradient, which differs from TRL's there.
        entropy: [N, T] token entropies (with grad if the bonus should train); logged as "entropy".
        entropy_coef: entropy bonus, subtracted per token before aggregation. With "token-mean"
            this equals TRL's separate masked-mean bonus; with other modes it is averaged like the loss.
        token_weights: [N, T] multiplies the surrogate term only (not KL/entropy), as TRL applies
            its top-entropy mask and vLLM importance weights.

    Returns:
        (loss, stats): loss is 0-dim; stats are detached 0-dim tensors: "loss/policy" (surrogate
        alone, aggregated), "loss/total", "clip_frac/low" (A<0 and ratio<1-clip_low),
        "clip_frac/high" (A>0 and ratio>1+clip_high), "clip_frac/region" (either),
        "clip_frac/dual" (dual clip binds; only with dual_clip), "ratio/mean|min|max", "kl" (masked
        mean of the KL term's estimate; only with ref_logp), "entropy" (only with entropy).
        Fractions and means are over masked tokens.
    """
    if ratio_level not in RATIO_LEVELS:
        raise ValueError(f"unknown ratio_level {ratio_level!r}; choose one of {RATIO_LEVELS}")
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (it bounds the loss at -dual_clip*A), got {dual_clip}")
    clip_high = clip_low if clip_high is None else clip_high
    adv = advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages  # [N, 1] or [N, T]

    # 1. importance ratio; 2. clipped surrogate
    ratio = importance_ratio(logp, old_logp, mask, ratio_level)  # [N, T]
    pg, dual_binds = clipped_surrogate(ratio, adv, clip_low, clip_high, dual_clip)  # [N, T]
    if token_weights is not None:
        pg = pg * token_weights  # [N, T]

    # 3. KL penalty and entropy bonus, per token before aggregation
    kl = None
    if ref_logp is not None:
        kl = kl_divergence(logp, ref_logp, kl_estimator) * (ratio if kl_bias_correction else 1.0)  # [N, T]
    per_token = pg
    if kl is not None and kl_beta != 0.0:
        per_token = per_token + kl_beta * kl
    if entropy is not None and entropy_coef != 0.0:
        per_token = per_token - entropy_coef * entropy

    # 4. aggregate
    loss = aggregate_loss(per_token, mask, loss_agg, max_completion_length=max_completion_length)

    with torch.no_grad():
        stats = {
            "loss/policy": aggregate_loss(pg.detach(), mask, loss_agg, max_completion_length=max_completion_length),
            "loss/total": loss.detach(),
            **_ratio_stats(ratio.detach(), adv, mask, clip_low, clip_high),
        }
        if dual_binds is not None:
            stats["clip_frac/dual"] = _masked_mean(dual_binds, mask)
        if kl is not None:
            stats["kl"] = _masked_mean(kl.detach(), mask)
        if entropy is not None:
            stats["entropy"] = _masked_mean(entropy.detach(), mask)
    return loss, stats


def _ratio_stats(ratio: Tensor, adv: Tensor, mask: Tensor, clip_low: float, clip_high: float) -> dict[str, Tensor]:
    """Clip fractions (A<0 below the range, A>0 above it) and the ratio's mean/min/max over real tokens."""
    low = (adv < 0) & (ratio < 1.0 - clip_low)  # [N, T]
    high = (adv > 0) & (ratio > 1.0 + clip_high)  # [N, T]
    real = ratio[mask.bool()]
    real = real if real.numel() else torch.ones(1, dtype=ratio.dtype, device=ratio.device)
    return {
        "clip_frac/low": _masked_mean(low, mask),
        "clip_frac/high": _masked_mean(high, mask),
        "clip_frac/region": _masked_mean(low | high, mask),
        "ratio/mean": _masked_mean(ratio, mask),
        "ratio/min": real.min(),
        "ratio/max": real.max(),
    }


def _rowwise_float32(fn, logits: Tensor, *rest: Tensor) -> Tensor:
    """Apply fn to logits in float32: whole batch if already >= float32, else one row at a time
    so the float32 copy of a half-precision [N, T, V] tensor is never built at once."""
    if logits.dtype in (torch.float32, torch.float64):
        return fn(logits, *rest)
    return torch.stack([fn(row.float(), *(r[i] for r in rest)) for i, row in enumerate(logits)])


def token_log_probs(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    """log softmax(logits / temperature) at the sampled tokens.

    Args:
        logits: [N, T, V] logits at the completion positions (already shifted: position t
            predicts tokens[:, t]).
        tokens: [N, T] sampled token ids.
        temperature: the sampling temperature (TRL divides logits by it too).

    Returns:
        [N, T] float32 (or float64) log-probs. Exact: gather minus logsumexp, which never keeps a
        full log-softmax copy of the logits.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")

    def pick(lg: Tensor, tok: Tensor) -> Tensor:
        lg = lg / temperature if temperature != 1.0 else lg
        return lg.gather(-1, tok.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(lg, dim=-1)  # [.., T]

    return _rowwise_float32(pick, logits, tokens)


def entropy_from_logits(logits: Tensor, *, temperature: float = 1.0) -> Tensor:
    """Entropy of softmax(logits / temperature) per position.

    Args:
        logits: [N, T, V].
        temperature: as in `token_log_probs`.

    Returns:
        [N, T] float32 (or float64) entropies: logsumexp(l) - sum softmax(l) * l.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")

    def ent(lg: Tensor) -> Tensor:
        lg = lg / temperature if temperature != 1.0 else lg
        return torch.logsumexp(lg, dim=-1) - (lg.softmax(-1) * lg).sum(-1)  # [.., T]

    return _rowwise_float32(ent, logits)
