"""The rollout-engine seam: prompts in, sampled completions (token ids, masks, text) out.

The GRPO and RCE stages only call `RolloutEngine.generate`; a faster engine (vLLM, a
compiled sampler) plugs in by implementing it, without touching the stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
from transformers import PreTrainedTokenizerBase


@dataclass
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    greedy: bool = False


@dataclass
class Rollout:
    prompt_ids: torch.Tensor  # [N, P] left-padded
    prompt_mask: torch.Tensor  # [N, P]
    completion_ids: torch.Tensor  # [N, C] right-padded with pad
    completion_mask: torch.Tensor  # [N, C] 1 on generated tokens up to and including EOS
    truncated: torch.Tensor  # [N] bool: no EOS within max_new_tokens
    texts: list[str]  # completions decoded up to EOS, special tokens removed

    @property
    def lengths(self) -> torch.Tensor:  # [N]
        return self.completion_mask.sum(1)


class RolloutEngine(Protocol):
    def generate(self, model: torch.nn.Module, prompts: Sequence[str], params: SamplingParams) -> Rollout: ...


def completion_masks(completion_ids: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask up to and including the first EOS, and which rows never reached one."""
    is_eos = completion_ids == eos_id  # [N, C]
    has_eos = is_eos.any(1)  # [N]
    first = torch.where(has_eos, is_eos.float().argmax(1), torch.full_like(has_eos, completion_ids.size(1), dtype=torch.long))
    positions = torch.arange(completion_ids.size(1), device=completion_ids.device)[None, :]  # [1, C]
    return (positions <= first[:, None]).long(), ~has_eos


class HFGenerateEngine:
    """`model.generate` with a KV cache: close to a bare sampling loop on small models."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer

    def encode_prompts(self, prompts: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        return enc["input_ids"].to(device), enc["attention_mask"].to(device)

    @torch.no_grad()
    def generate(self, model: torch.nn.Module, prompts: Sequence[str], params: SamplingParams) -> Rollout:
        device = next(model.parameters()).device
        prompt_ids, prompt_mask = self.encode_prompts(prompts, device)
        greedy = params.greedy or params.temperature == 0
        kwargs = dict(do_sample=not greedy, max_new_tokens=params.max_new_tokens,
                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        if not greedy:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None)
        else:  # silence transformers' warnings about sampling knobs under greedy decoding
            kwargs.update(temperature=None, top_p=None, top_k=None)
        was_training = model.training
        model.eval()
        out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, **kwargs)
        model.train(was_training)
        completion_ids = out[:, prompt_ids.size(1):]  # [N, C]
        mask, truncated = completion_masks(completion_ids, self.tokenizer.eos_token_id)
        completion_ids = completion_ids.masked_fill(mask == 0, self.tokenizer.pad_token_id)
        texts = self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        return Rollout(prompt_ids, prompt_mask, completion_ids, mask, truncated, texts)


def repeat_prompts(prompts: Sequence[str], n: int) -> list[str]:
    """Each prompt n times in a row: groups are contiguous rows."""
    return [p for p in prompts for _ in range(n)]
