"""Per-token log-probs of completions under a model (policy, old policy or reference)."""

from __future__ import annotations

import torch

from grpo.rollout import merged


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


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(token) under softmax(logits / temperature): [N, C, V], [N, C] -> [N, C]."""
    if temperature not in (0.0, 1.0):
        logits = logits / temperature
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # [N, C]
    return picked - torch.logsumexp(logits, dim=-1)
