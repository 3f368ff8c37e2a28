"""Rollouts and their scoring: the plain decoder (grpo/rollout/merged.py) and MergedEngine
compute what transformers + peft compute, and a rollout's masks say what was generated."""

import pytest
import torch

from grpo.config.schema import LoraConfig, ModelConfig, TinyArchConfig
from grpo.models.load import load_model
from grpo.models.lora import apply_lora, reference_context
from grpo.rollout import merged
from grpo.rollout.engine import HFGenerateEngine, MergedEngine, SamplingParams, completion_masks, repeat_prompts
from grpo.rollout.logprobs import completion_logits, model_completion_logits, sequence_inputs

PROMPTS = ["cmp 3 41 =", "cmp 17 17 =", "cmp 99 5 =", "cmp 1 2 ="]  # different lengths: left padding


def policy_model(architecture="qwen2", dropout=0.0, kv_heads=2):
    model, tok = load_model(ModelConfig(tiny=TinyArchConfig(architecture=architecture, num_kv_heads=kv_heads)))
    policy = apply_lora(model, LoraConfig(rank=4, alpha=8, dropout=dropout))
    with torch.no_grad():  # move the adapter away from its zero init, so merged != base
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(hash(name) % 1000))
    return policy, tok


def rollout_of(policy, tok, group=3, new_tokens=6, seed=0):
    torch.manual_seed(seed)
    return HFGenerateEngine(tok).generate(
        policy, repeat_prompts(PROMPTS, group), SamplingParams(max_new_tokens=new_tokens)
    )


def with_early_eos(rollout, tok):
    """Some rows end early: EOS then pad, as a real rollout whose completions stopped."""
    ids = rollout.completion_ids.clone()
    ids[0, 1], ids[4, 3] = tok.eos_token_id, tok.eos_token_id
    mask, truncated = completion_masks(ids, tok.eos_token_id)
    ids = ids.masked_fill(mask == 0, tok.pad_token_id)
    return rollout.__class__(rollout.prompt_ids, rollout.prompt_mask, ids, mask, truncated, rollout.texts)


def close_on_mask(a, b, mask, tol=1e-5):
    m = mask.bool()
    return (a - b)[m].abs().max().item() < tol


@pytest.mark.parametrize("architecture", ["qwen2", "llama"])
def test_merged_lora_logits_equal_the_peft_models(architecture):
    policy, tok = policy_model(architecture)
    policy.eval()
    r = rollout_of(policy, tok)
    ids, attention, positions = sequence_inputs(r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    assert merged.supports(policy)
    with torch.no_grad():
        want = policy(input_ids=ids, attention_mask=attention, position_ids=positions).logits
        got = merged.forward(merged.snapshot(policy, merge=True), ids, attention, positions)
    assert close_on_mask(want, got, attention)


def test_scoring_on_the_plain_decoder_equals_the_models_forward_and_gradients():
    policy, tok = policy_model()
    r = with_early_eos(rollout_of(policy, tok), tok)
    args = (r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    policy.eval()
    want = model_completion_logits(policy, *args)
    got = completion_logits(policy, *args)  # grouped prompts, unmerged adapter with autograd
    assert got.shape == want.shape == (*r.completion_ids.shape, want.shape[-1])
    assert close_on_mask(want, got, r.completion_mask)
    weight = torch.randn_like(want)
    grads = []
    for logits in (want, got):
        policy.zero_grad()
        (logits * weight * r.completion_mask[..., None]).sum().backward(retain_graph=True)
        grads.append({n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 16  # lora_A and lora_B of q/k/v/o in 2 layers
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4), name


def test_reference_logprobs_without_peft_equal_disable_adapters():
    policy, tok = policy_model()
    policy.train()  # as in a step: the reference runs after the policy has trained
    r = rollout_of(policy, tok)
    args = (r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    with torch.no_grad(), policy.disable_adapter():
        want = model_completion_logits(policy, *args)
    reference = reference_context(policy, lora_enabled=True)
    with torch.no_grad(), reference() as ref:
        got = completion_logits(ref, *args)
        base = merged.snapshot(ref)
    assert all(not lw.lora for lw in base.layers)  # the base weights, no adapter
    assert close_on_mask(want, got, r.completion_mask)
    with torch.no_grad():
        assert not close_on_mask(want, completion_logits(policy, *args), r.completion_mask)  # adapter back on


def test_duplicated_prompts_anywhere_in_the_batch_and_single_token_completions():
    policy, tok = policy_model()
    policy.eval()
    r = rollout_of(policy, tok, group=2)
    order = torch.randperm(r.prompt_ids.shape[0], generator=torch.Generator().manual_seed(1))  # groups not contiguous
    args = [t[order] for t in (r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)]
    with torch.no_grad():
        assert close_on_mask(model_completion_logits(policy, *args), completion_logits(policy, *args), args[3])
        one = [args[0], args[1], args[2][:, :1], args[3][:, :1]]
        assert close_on_mask(model_completion_logits(policy, *one), completion_logits(policy, *one), one[3])


@pytest.mark.parametrize("p", [0.1, 0.5])  # the sparse draw and F.dropout
def test_lora_dropout_applies_per_row_in_training(p):
    policy, tok = policy_model(dropout=p)
    r = rollout_of(policy, tok)
    args = (r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    policy.eval()
    with torch.no_grad():
        clean = completion_logits(policy, *args)
    policy.train()
    noisy = completion_logits(policy, *args)
    assert noisy.requires_grad and not close_on_mask(clean, noisy, r.completion_mask, tol=1e-3)
    # rows of one group differ on their prompt too: each row has its own dropout masks, as in peft
    assert not torch.allclose(noisy[0, 0], noisy[1, 0])


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_new_tokens=7),
        SamplingParams(max_new_tokens=7, temperature=0.7, top_k=5, top_p=0.9),
        SamplingParams(max_new_tokens=7, greedy=True),
    ],
)
@pytest.mark.parametrize("min_new_tokens", [0, 7])
def test_merged_engine_samples_what_generate_samples(params, min_new_tokens):
    policy, tok = policy_model()
    with torch.no_grad():  # make EOS likely, so rows stop early and generation may end before max_new_tokens
        policy.get_base_model().model.embed_tokens.weight[tok.eos_token_id] *= 6
    prompts = repeat_prompts(PROMPTS, 4)
    assert MergedEngine(tok).usable(policy)
    out = []
    for engine in (HFGenerateEngine(tok, min_new_tokens), MergedEngine(tok, min_new_tokens)):
        torch.manual_seed(11)
        out.append(engine.generate(policy, prompts, params))
    want, got = out
    assert torch.equal(want.completion_ids, got.completion_ids)
    assert torch.equal(want.completion_mask, got.completion_mask) and torch.equal(want.truncated, got.truncated)
    assert want.texts == got.texts
    if min_new_tokens:
        assert got.truncated.all() and got.completion_ids.shape[1] == 7  # EOS was never sampled


def test_a_fixed_seed_gives_a_valid_rollout():
    policy, tok = policy_model()
    with torch.no_grad():
        policy.get_base_model().model.embed_tokens.weight[tok.eos_token_id] *= 6
    prompts = repeat_prompts(PROMPTS, 4)
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append(MergedEngine(tok).generate(policy, prompts, SamplingParams(max_new_tokens=8)))
    r = runs[0]
    assert torch.equal(r.completion_ids, runs[1].completion_ids)
    assert r.prompt_ids.shape == r.prompt_mask.shape and r.prompt_ids.shape[0] == len(prompts)
    assert (r.prompt_mask[:, -1] == 1).all() and (r.prompt_mask[:, 0] == 0).any()  # left padded
    eos, pad = tok.eos_token_id, tok.pad_token_id
    for ids, mask, truncated, text in zip(
        r.completion_ids.tolist(), r.completion_mask.tolist(), r.truncated.tolist(), r.texts
    ):
        n = sum(mask)
        assert mask == [1] * n + [0] * (len(mask) - n)  # a prefix
        assert all(t == pad for t in ids[n:])
        assert truncated == (eos not in ids[:n])
        if not truncated:
            assert ids[n - 1] == eos and eos not in ids[: n - 1]
        assert text == tok.decode(ids[:n], skip_special_tokens=True)
    assert r.truncated.any() and not r.truncated.all()  # both kinds of row occur with this seed


def test_models_outside_the_plain_decoder_keep_the_transformers_path():
    policy, tok = policy_model()
    assert merged.supports(policy) and merged.supports(policy.get_base_model())
    policy.get_base_model().model.gradient_checkpointing = True
    assert merged.supports(policy, training=False) and not merged.supports(policy, training=True)
    policy.get_base_model().model.gradient_checkpointing = False
    policy._original_forward = policy.forward  # accelerate's autocast wrapper (mixed precision)
    assert not merged.supports(policy)
    del policy._original_forward

    class Wrapped(torch.nn.Module):  # as DDP: the model inside, no config outside
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert not merged.supports(Wrapped(policy))
    with merged.switched(enabled=False):
        assert not merged.supports(policy)
        torch.manual_seed(0)
        a = MergedEngine(tok).generate(policy, PROMPTS, SamplingParams(max_new_tokens=4))  # falls back to generate()
    torch.manual_seed(0)
    b = HFGenerateEngine(tok).generate(policy, PROMPTS, SamplingParams(max_new_tokens=4))
    assert torch.equal(a.completion_ids, b.completion_ids)
    policy.get_base_model().generation_config.repetition_penalty = 1.3  # a processor MergedEngine does not apply
    assert not MergedEngine(tok).usable(policy)


def test_full_fine_tuning_gradients_reach_every_weight_as_through_the_model():
    model, tok = load_model(ModelConfig())
    model.train()
    r = rollout_of(model, tok, group=2)
    args = (r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    grads = []
    for score in (model_completion_logits, completion_logits):
        model.zero_grad()
        logits = score(model, *args)
        (logits.log_softmax(-1)[..., 3] * r.completion_mask).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, want in grads[0].items():
        assert torch.allclose(want, grads[1][name], atol=1e-5, rtol=1e-4), name


def test_sparse_dropout_draws_iid_bernoulli_masks_and_its_gradient():
    torch.manual_seed(0)
    x = torch.ones(4_000_000)
    dropped = (merged.dropout(x, 0.05) == 0).float()
    n = dropped.numel()
    assert abs(dropped.mean().item() - 0.05) < 4 * (0.05 * 0.95 / n) ** 0.5  # the rate, within 4 sigma
    pairs = dropped[1:] * dropped[:-1]
    assert abs(pairs.mean().item() - 0.05**2) < 4 * (0.05**2 / n) ** 0.5  # neighbours independent
    assert abs(dropped[: n // 2].mean().item() - dropped[n // 2 :].mean().item()) < 0.001  # no drift along the tensor
    kept = merged.dropout(torch.full((1000,), 2.0), 0.05)
    assert torch.isin(
        kept, torch.tensor([0.0, 2.0 / 0.95])
    ).all()  # inverted dropout: kept entries scaled by 1 / (1 - p)
    x = torch.randn(3, 50, 64, requires_grad=True)
    y = merged.dropout(x.expand(3, *x.shape), 0.2)  # three masks at once, as for q/k/v
    assert not torch.equal(y[0] == 0, y[1] == 0)
    weight = torch.randn_like(y)
    (y * weight).sum().backward()
    assert torch.allclose(x.grad, ((y != 0) * weight / 0.8).sum(0), atol=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_token_ids_equal_the_tokenizers_and_tokenize_each_string_once(side, monkeypatch):
    from grpo.rollout.tokens import TokenIds

    _, tok = load_model(ModelConfig())
    monkeypatch.setattr(tok, "padding_side", side)
    texts = ["cmp 3 14 =", "7", "cmp 3 14 =", "a longer prompt: 12 + 30 =", ""]
    cache = TokenIds(tok)
    ids, mask = cache.padded(texts)
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert torch.equal(ids, enc["input_ids"]) and torch.equal(mask, enc["attention_mask"])
    calls = []
    monkeypatch.setattr(cache, "tokenizer", lambda batch, **kw: calls.append(list(batch)) or tok(batch, **kw))
    assert cache(texts + ["new one"]) == [tok(t, add_special_tokens=False)["input_ids"] for t in texts + ["new one"]]
    assert calls == [["new one"]]  # only the unseen string, in one call
    small = TokenIds(tok, max_entries=2)
    assert small(["a", "b", "c"]) == [tok(t, add_special_tokens=False)["input_ids"] for t in "abc"]
