"""rollout.engine=vllm: vLLM in this process samples what transformers samples, from the latest weights.

Greedy tokens of `VLLMEngine` equal `HFGenerateEngine`'s (fp32) with no adapter and with a trained
LoRA adapter, synced as the adapter or as merged weights; after an optimizer step both change
identically (nothing stale). The engine's log-probs equal the trainer's; vLLM leaves the run's
random streams and torch's thread setter as they were. Runs in .venv-vllm (`bash .ci/vllm`).
"""

import random

import numpy as np
import pytest
import torch

from tests.helpers.vllm_setup import require_vllm, tiny_vllm

pytestmark = pytest.mark.vllm
require_vllm()

from grpo.algorithms.losses import token_log_probs  # noqa: E402
from grpo.config.schema import RolloutConfig  # noqa: E402
from grpo.rollout.engine import HFGenerateEngine, SamplingParams, repeat_prompts  # noqa: E402
from grpo.rollout.logprobs import completion_logits  # noqa: E402
from grpo.rollout.vllm_engine import VLLMEngine  # noqa: E402

PROMPTS = [f"cmp {a} {b} =" for a, b in [(3, 41), (17, 17), (99, 5), (1, 2), (60, 8), (7, 70)]]
GREEDY = SamplingParams(max_new_tokens=8, greedy=True)


def engine_for(model, tok, **rollout) -> VLLMEngine:
    return VLLMEngine(tok, model, RolloutConfig(**rollout), seed=0, context=64)


def tokens(rollout) -> list[list[int]]:
    """Each row's generated tokens, up to and including EOS."""
    return [row[mask.bool()].tolist() for row, mask in zip(rollout.completion_ids, rollout.completion_mask)]


def greedy_pair(engine, model, tok):
    model.eval()
    return tokens(engine.generate(model, PROMPTS, GREEDY)), tokens(
        HFGenerateEngine(tok).generate(model, PROMPTS, GREEDY)
    )


def train(model, tok, steps=1, lr=0.05):
    """`steps` Adam steps towards answering "7" then EOS: greedy tokens move."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    for _ in range(steps):
        loss = 0.0
        for prompt in PROMPTS:
            ids = tok(prompt + "7", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            ids = torch.tensor([ids])
            loss = loss + model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def test_greedy_tokens_equal_transformers_without_adapter_and_after_a_step():
    """lora=none: full weights pushed in memory; the step changes embeddings (tied head) too."""
    model, tok = tiny_vllm()
    engine = engine_for(model, tok)
    try:
        ours, theirs = greedy_pair(engine, model, tok)
        assert ours == theirs
        syncs = engine.syncs
        assert greedy_pair(engine, model, tok)[0] == ours and engine.syncs == syncs  # unchanged: no push
        train(model, tok)
        after, theirs_after = greedy_pair(engine, model, tok)
        assert after != ours, "the optimizer step should change greedy tokens"
        assert after == theirs_after
        assert engine.syncs == syncs + 1
    finally:
        engine.close()


@pytest.mark.parametrize("sync", ["adapter", "merged"])
def test_greedy_tokens_equal_transformers_with_a_trained_adapter_and_after_a_step(sync):
    model, tok = tiny_vllm(lora=True)
    train(model, tok, steps=3, lr=0.02)  # a trained adapter (B moved away from zero)
    engine = engine_for(model, tok, sync=sync)
    try:
        ours, theirs = greedy_pair(engine, model, tok)
        assert ours == theirs
        with model.disable_adapter():
            base = tokens(HFGenerateEngine(tok).generate(model, PROMPTS, GREEDY))
        assert ours != base, "the trained adapter should change greedy tokens"
        train(model, tok, steps=1, lr=0.05)
        after, theirs_after = greedy_pair(engine, model, tok)
        assert after != ours and after == theirs_after
        if sync == "adapter":  # a new LoRARequest id per sync: a reused id would serve the old adapter
            assert engine.lora_request.lora_int_id == engine.syncs == 2
    finally:
        engine.close()


def test_eos_ends_a_completion_and_is_kept():
    model, tok = tiny_vllm()
    train(model, tok, steps=30, lr=0.01)
    engine = engine_for(model, tok)
    try:
        rollout = engine.generate(model, PROMPTS, GREEDY)
        hf = HFGenerateEngine(tok).generate(model, PROMPTS, GREEDY)
        assert tokens(rollout) == tokens(hf)
        assert not rollout.truncated.any()  # every row stopped at EOS, which vLLM returns and the mask keeps
        assert all(row[-1] == tok.eos_token_id for row in tokens(rollout))
        assert "7" in rollout.texts and set(rollout.texts) <= {"7", ""}
    finally:
        engine.close()


def test_engine_logprobs_equal_the_trainers_and_sampling_follows_the_run_seed():
    model, tok = tiny_vllm(lora=True)
    train(model, tok, steps=2, lr=0.02)
    engine = engine_for(model, tok)
    prompts = repeat_prompts(PROMPTS, 4)
    try:
        for temperature in (1.0, 0.7):
            params = SamplingParams(max_new_tokens=8, temperature=temperature)
            torch.manual_seed(5)
            rollout = engine.generate(model, prompts, params)
            after = torch.get_rng_state()
            with torch.no_grad():
                logits = completion_logits(
                    model, rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids, rollout.completion_mask
                )
            trainer = token_log_probs(logits, rollout.completion_ids, temperature)
            mask = rollout.completion_mask.bool()
            assert (trainer - rollout.logprobs)[mask].abs().max().item() < 1e-4
            assert (rollout.logprobs[~mask] == 0).all()
            # one draw of the run's generator seeds the call: same seed, same tokens; the stream moves by one draw
            torch.manual_seed(5)
            again = engine.generate(model, prompts, params)
            assert torch.equal(again.completion_ids, rollout.completion_ids)
            torch.manual_seed(5)
            torch.randint(0, 2**31 - 1 - len(prompts), ())
            assert torch.equal(torch.get_rng_state(), after)
            group = [tuple(t) for t in tokens(rollout)[:4]]
            assert len(set(group)) > 1, "rows of a group are sampled with their own seeds"
    finally:
        engine.close()


def test_starting_the_engine_leaves_the_runs_random_streams_and_threads_alone():
    model, tok = tiny_vllm()
    set_threads = torch.set_num_threads
    threads = torch.get_num_threads()
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    engine = engine_for(model, tok)
    try:
        assert random.getstate() == states[0]
        assert (np.random.get_state()[1] == states[1]).all()
        assert torch.equal(torch.get_rng_state(), states[2])
        assert torch.set_num_threads is set_threads and torch.get_num_threads() == threads
        engine.generate(model, PROMPTS, GREEDY)  # greedy draws nothing
        assert torch.equal(torch.get_rng_state(), states[2])
        assert "vllm" in engine.describe() and "full weights" in engine.describe()
    finally:
        engine.close()
