"""The tiny model, its tokenizer, loading from a local directory, LoRA and the KL reference."""

import pytest
import torch

from grpo.config.errors import ConfigError
from grpo.config.schema import LoraConfig, ModelConfig
from grpo.models.load import load_model
from grpo.models.lora import apply_lora, reference_context
from grpo.models.tokenizer import build_char_tokenizer


def test_char_tokenizer_round_trips_text_and_pads_left():
    tok = build_char_tokenizer()
    text = "py: len([1,2]) = 2\nok"
    assert tok.decode(tok(text)["input_ids"]) == text
    batch = tok(["a", "abc"], padding=True)
    assert batch["input_ids"][0][:2] == [tok.pad_token_id] * 2


def test_tiny_model_is_seeded_by_init_seed_only():
    torch.manual_seed(123)
    a, _ = load_model(ModelConfig())
    torch.manual_seed(456)
    b, _ = load_model(ModelConfig())
    c, _ = load_model(ModelConfig(init_seed=1))
    pa, pb, pc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_loads_a_model_saved_to_a_local_directory(tmp_path):
    model, tok = load_model(ModelConfig())
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_model(ModelConfig(name_or_path=str(tmp_path)))
    ids = torch.tensor([tok("cmp 1 2 =")["input_ids"]])
    assert torch.allclose(model(ids).logits, loaded(ids).logits)
    assert loaded_tok.padding_side == "left"


def test_missing_weights_fail_with_one_line_saying_how_to_point_at_them(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_model(ModelConfig(name_or_path="Qwen/Qwen2.5-0.5B-Instruct"))
    message = str(info.value)
    assert "\n" not in message and "model.name_or_path" in message and "--local-dir" in message
    with pytest.raises(ConfigError):
        load_model(ModelConfig(name_or_path=str(tmp_path)))  # an empty directory


def test_reference_is_the_policy_with_the_adapter_disabled():
    model, tok = load_model(ModelConfig())
    ids = torch.tensor([tok("cmp 1 2 =")["input_ids"]])
    base_logits = model(ids).logits.detach()
    policy = apply_lora(model, LoraConfig(rank=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # move the adapter away from its zero init
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    assert not torch.allclose(policy(ids).logits, base_logits)
    reference = reference_context(policy, lora_enabled=True)
    with reference() as ref:
        assert ref is policy  # no second copy
        assert torch.allclose(ref(ids).logits, base_logits)
    assert not torch.allclose(policy(ids).logits, base_logits)  # adapter back on


def test_lora_target_modules_must_exist():
    model, _ = load_model(ModelConfig())
    with pytest.raises(ConfigError, match="no module named gate"):
        apply_lora(model, LoraConfig(target_modules=["q_proj", "gate"]))
