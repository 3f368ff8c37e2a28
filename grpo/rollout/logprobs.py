"""Per-token log-probs (and entropies) of completions under a model: policy, old policy or reference."""

from __future__ import annotations

import torch

from grpo.algorithms.losses import entropy_from_logits, token_log_probs
from grpo.rollout import merged
from grpo.rollout.engine import Rollout


def sequence_inputs(prompt_ids, prompt_mask, completion_ids, completion_mask):
    """Prompt and completion as one batch, with position ids that skip the left padding."""
    input_ids = torch.cat([prompt_ids, completion_ids], 1)  # [N, P + C]
    attention = torch.cat([prompt_mask, completion_mask], 1)  # [N, P + C]
    position_ids = (attention.cumsum(1) - 1).clamp(min=0)
    return input_ids, attention, position_ids


def completion_logits(model: torch.nn.Module, prompt_ids, prompt_mask, completion_ids, completion_mask) -> torch.Tensor:
    """Logits that predict each completion token: [N, C, V].

    Plain Qwen2/Llama models (peft LoRA or not) run on grpo/rollout/merged.py: the same numbers
    without transformers' and peft's module overhead, each distinct prompt once per group, and
    the reference (adapter disabled) on the base weights directly. Others: `model(...)`.
    """
    if merged.supports(model):
        weights = merged.snapshot(model)
        return merged.completion_logits(weights, prompt_ids, prompt_mask, completion_ids, completion_mask)
    return model_completion_logits(model, prompt_ids, prompt_mask, completion_ids, completion_mask)


def model_completion_logits(
    model: torch.nn.Module, prompt_ids, prompt_mask, completion_ids, completion_mask
) -> torch.Tensor:
    """`completion_logits` through the model's own forward (any model, DDP-wrapped included)."""
    input_ids, attention, position_ids = sequence_inputs(prompt_ids, prompt_mask, completion_ids, completion_mask)
    c = completion_ids.size(1)
    # Only the last C + 1 positions feed the LM head: the prompt's logits are never needed.
    logits = model(
        input_ids=input_ids, attention_mask=attention, position_ids=position_ids, logits_to_keep=c + 1, use_cache=False
    ).logits  # [N, C + 1, V]
    return logits[:, :-1, :]


def sequence_logprobs(model: torch.nn.Module, rollout: Rollout, temperature: float) -> torch.Tensor:
    """[N, C] log-probs of the rollout's completion tokens under `model`."""
    logits = completion_logits(
        model, rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids, rollout.completion_mask
    )
    return token_log_probs(logits, rollout.completion_ids, temperature)


def logprobs_and_entropy(
    model: torch.nn.Module, rollout: Rollout, temperature: float, with_grad_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, C] log-probs of the completion tokens and the policy's entropy at each position.

    The entropy carries a gradient only when an entropy bonus trains on it; otherwise it is
    computed without one, for the logs and the top-entropy token mask.
    """
    logits = completion_logits(
        model, rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids, rollout.completion_mask
    )
    logp = token_log_probs(logits, rollout.completion_ids, temperature)
    if with_grad_entropy:
        return logp, entropy_from_logits(logits, temperature=temperature)
    with torch.no_grad():
        return logp, entropy_from_logits(logits.detach(), temperature=temperature)
