"""The rollout-engine seam: prompts in, sampled completions (token ids, masks, text) out.

The GRPO and RCE stages only call `RolloutEngine.generate`; a faster engine (vLLM, a
compiled sampler) plugs in by implementing it, without touching the stages.

- `HFGenerateEngine`: transformers' `model.generate` with a KV cache; works for any model.
- `MergedEngine`: the same sampling, step for step, on the plain decoder of
  grpo/rollout/merged.py with the LoRA adapter merged into the weights and each distinct
  prompt prefilled once per group; falls back to `model.generate` for models it does not cover.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from grpo.rollout.tokens import TokenIds

if TYPE_CHECKING:  # transformers is imported by whoever builds the tokenizer and model
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
    # [N, C] the sampling engine's log-probs of the completion tokens (0 off the mask), from engines
    # that report them (vLLM); the GRPO step compares them with the trainer's (rollout/logprob_diff_*)
    logprobs: torch.Tensor | None = None

    @property
    def lengths(self) -> torch.Tensor:  # [N]
        return self.completion_mask.sum(1)


class RolloutEngine(Protocol):
    def generate(self, model: torch.nn.Module, prompts: Sequence[str], params: SamplingParams) -> Rollout: ...


def completion_masks(completion_ids: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask up to and including the first EOS, and which rows never reached one."""
    is_eos = completion_ids == eos_id  # [N, C]
    has_eos = is_eos.any(1)  # [N]
    first = torch.where(
        has_eos, is_eos.float().argmax(1), torch.full_like(has_eos, completion_ids.size(1), dtype=torch.long)
    )
    positions = torch.arange(completion_ids.size(1), device=completion_ids.device)[None, :]  # [1, C]
    return (positions <= first[:, None]).long(), ~has_eos


class HFGenerateEngine:
    """`model.generate` with a KV cache: close to a bare sampling loop on small models."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, min_new_tokens: int = 0):
        self.tokenizer = tokenizer
        self.token_ids = TokenIds(tokenizer)
        self.min_new_tokens = min_new_tokens  # EOS is not sampled before this many tokens (benchmarks: fixed length)

    def encode_prompts(self, prompts: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return self.token_ids.padded(prompts, device)

    def describe(self, model: torch.nn.Module | None = None) -> str:
        """Which sampler this is, for the run header."""
        return "transformers' model.generate (KV cache)"

    def generation_kwargs(self, params: SamplingParams) -> dict:
        """What `model.generate` is given: sampling knobs, EOS/pad, forced minimum length."""
        greedy = params.greedy or params.temperature == 0
        kwargs = dict(
            do_sample=not greedy,
            max_new_tokens=params.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        if self.min_new_tokens:
            kwargs["min_new_tokens"] = min(self.min_new_tokens, params.max_new_tokens)
        if not greedy:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None)
        else:  # silence transformers' warnings about sampling knobs under greedy decoding
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    @torch.no_grad()
    def generate(self, model: torch.nn.Module, prompts: Sequence[str], params: SamplingParams) -> Rollout:
        device = next(model.parameters()).device
        prompt_ids, prompt_mask = self.encode_prompts(prompts, device)
        was_training = model.training
        model.eval()
        out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, **self.generation_kwargs(params))
        model.train(was_training)
        return self.rollout(prompt_ids, prompt_mask, out[:, prompt_ids.size(1) :])

    def rollout(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor) -> Rollout:
        """Masks, truncation and text of sampled completions [N, C]."""
        mask, truncated = completion_masks(completion_ids, self.tokenizer.eos_token_id)
        completion_ids = completion_ids.masked_fill(mask == 0, self.tokenizer.pad_token_id)
        texts = self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        return Rollout(prompt_ids, prompt_mask, completion_ids, mask, truncated, texts)


# generation_config settings that change nothing at these values (anything else set: use model.generate)
_NEUTRAL = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "min_length": 0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "num_beams": 1,
    "num_beam_groups": 1,
    "num_return_sequences": 1,
    "diversity_penalty": 0.0,
    "length_penalty": 1.0,
    "guidance_scale": 1.0,
    "renormalize_logits": False,
    "remove_invalid_values": False,
    "early_stopping": False,
    "top_k": None,
    "top_p": None,
    "temperature": None,
    "min_p": None,
    "top_h": None,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "sequence_bias": None,
    "exponential_decay_length_penalty": None,
    "watermarking_config": None,
    "stop_strings": None,
    "max_time": None,
    "penalty_alpha": None,
    "dola_layers": None,
    "token_healing": False,
    "low_memory": None,
    "prompt_lookup_num_tokens": None,
    "assistant_early_exit": None,
    "constraints": None,
    "force_words_ids": None,
    "min_new_tokens": None,
    "output_scores": False,
    "output_logits": False,
    "return_dict_in_generate": False,
    "output_attentions": False,
    "output_hidden_states": False,
}
# settings that the call itself overrides or that do not affect the sampled tokens
_IRRELEVANT = {
    "pad_token_id",
    "eos_token_id",
    "bos_token_id",
    "decoder_start_token_id",
    "max_length",
    "max_new_tokens",
    "do_sample",
    "use_cache",
    "cache_implementation",
    "cache_config",
    "transformers_version",
    "_from_model_config",
    "is_assistant",
    "compile_config",
    "disable_compile",
    "num_assistant_tokens",
    "num_assistant_tokens_schedule",
    "assistant_confidence_threshold",
    "assistant_lookbehind",
    "target_lookbehind",
    "trust_remote_code",
    "generation_kwargs",
    "return_legacy_cache",
}


def plain_generation_config(model: torch.nn.Module) -> bool:
    """Whether the model's generation_config adds nothing beyond temperature/top-k/top-p/EOS
    (which the call sets itself): then `MergedEngine` samples exactly as `model.generate`."""
    config = getattr(model, "generation_config", None)
    if config is None:
        return True
    for key, value in config.to_dict().items():
        if value is None or key in _IRRELEVANT or key in ("temperature", "top_k", "top_p"):  # the call sets these
            continue
        if key not in _NEUTRAL or value != _NEUTRAL[key]:
            return False
    return True


class TokenChooser:
    """One step of `model.generate`'s sampling, in its order: minimum length (no EOS yet) ->
    temperature -> top-k -> top-p -> multinomial (or argmax); finished rows then get pad."""

    def __init__(
        self, params: SamplingParams, eos_id: int, pad_id: int, min_new_tokens: int, batch: int, device: torch.device
    ):
        from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

        self.greedy = params.greedy or params.temperature == 0
        self.temperature = params.temperature
        self.top_k = TopKLogitsWarper(params.top_k) if not self.greedy and params.top_k else None
        self.top_p = TopPLogitsWarper(params.top_p) if not self.greedy and params.top_p < 1.0 else None
        self.eos, self.pad = eos_id, pad_id
        self.min_new_tokens = min(min_new_tokens, params.max_new_tokens)
        self.unfinished = torch.ones(batch, dtype=torch.long, device=device)

    def __call__(self, step: int, logits: torch.Tensor) -> tuple[torch.Tensor, bool]:
        scores = logits  # [N, V] float32
        if step < self.min_new_tokens:
            scores = scores.clone()
            scores[:, self.eos] = -float("inf")
        if self.greedy:
            tokens = scores.argmax(-1)
        else:
            if self.temperature != 1.0:
                scores = scores / self.temperature
            if self.top_k is not None:
                scores = self.top_k(None, scores)
            if self.top_p is not None:
                scores = self.top_p(None, scores)
            tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        tokens = tokens * self.unfinished + self.pad * (1 - self.unfinished)
        self.unfinished = self.unfinished & (tokens != self.eos).long()
        return tokens, not bool(self.unfinished.any())


class MergedEngine(HFGenerateEngine):
    """`HFGenerateEngine`'s sampling without transformers' and peft's per-token overhead.

    The adapter is merged into a copy of the weights once per call (W + scale * B @ A), each
    distinct prompt is prefilled once for its whole group, and a KV-cached loop samples with
    `model.generate`'s processors and RNG calls (same seed, same tokens, up to float rounding).
    Models the plain decoder does not cover (see `merged.supports`) go to `model.generate`.
    """

    def usable(self, model: torch.nn.Module) -> bool:
        from grpo.rollout import merged

        return merged.supports(model, training=False) and plain_generation_config(merged.causal_lm(model))

    def describe(self, model: torch.nn.Module | None = None) -> str:
        if model is not None and not self.usable(model):
            return "transformers' model.generate (the plain decoder does not cover this model or its generation_config)"
        return "the plain decoder (grpo/rollout/merged.py), LoRA merged for sampling, prompts prefilled once per group"

    @torch.no_grad()
    def generate(self, model: torch.nn.Module, prompts: Sequence[str], params: SamplingParams) -> Rollout:
        if not self.usable(model):
            return super().generate(model, prompts, params)
        from grpo.rollout import merged

        device = next(model.parameters()).device
        prompt_ids, prompt_mask = self.encode_prompts(prompts, device)
        choose = TokenChooser(
            params, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id, self.min_new_tokens, len(prompts), device
        )
        weights = merged.snapshot(model, merge=True)
        completion_ids = merged.sample(weights, prompt_ids, prompt_mask, params.max_new_tokens, choose)
        return self.rollout(prompt_ids, prompt_mask, completion_ids)


def repeat_prompts(prompts: Sequence[str], n: int) -> list[str]:
    """Each prompt n times in a row: groups are contiguous rows."""
    return [p for p in prompts for _ in range(n)]
