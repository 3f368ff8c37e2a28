"""A Qwen2/Llama decoder as plain tensor code over the model's own weights.

At the sizes we train on a CPU, a transformers forward is mostly Python: mask and cache
objects, ~15 module calls per layer, and peft's LoRA wrappers (3 more modules per projection).
This module runs the same arithmetic without them, and does less of it:

- `snapshot(model)` reads the weights for one use: q/k/v fused into one matrix and gate/up into
  another (cached while the base weights are unchanged); a LoRA adapter merged in
  (W + scale * B @ A) for sampling, kept apart (autograd reaches A and B, dropout applies) for
  the policy forward, or left out for the reference (the base weights: what
  `disable_adapter()` gives, without calling a single peft module).
- `completion_logits(...)`: the logits that score a rollout. The G completions of a prompt
  share it, so the prompt runs once per distinct prompt and its keys/values are shared by the
  group; the last completion token, which predicts nothing, is not run at all.
- `sample(...)`: a KV-cached sampling loop (prompts prefilled once per distinct prompt too).

Only plain Qwen2/Llama causal LMs qualify (`supports(model)`): default RoPE, no sliding
window, silu MLP, unsharded unquantised weights, vanilla LoRA, no autocast wrapper. Anything
else keeps the transformers path. tests/test_rollout.py pins the results to transformers' and
peft's.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

ENABLED = True  # False: every caller takes the transformers path (comparisons, debugging)
ARCHITECTURES = ("qwen2", "llama")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


# ---------------------------------------------------------------- which models qualify
def causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers causal LM under a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _plain(t: Optional[Tensor]) -> bool:
    """A dense tensor with all its values here: not an FSDP/DTensor shard, not a ZeRO-3 or meta placeholder."""
    return t is None or (type(t.data) is torch.Tensor and t.numel() > 0 and not t.is_meta and t.layout == torch.strided)


def _parts(layer: torch.nn.Module, name: str) -> tuple[torch.nn.Module, Optional[torch.nn.Module]]:
    """(the nn.Linear, its peft LoRA wrapper or None) of one projection."""
    module = getattr(layer.self_attn if name in ATTENTION else layer.mlp, name)
    base = getattr(module, "base_layer", None)
    return (base, module) if base is not None else (module, None)


def _vanilla_lora(wrapper: torch.nn.Module) -> bool:
    """A peft LoRA Linear: plain A and B without bias, no DoRA/variant, unmerged, one active adapter."""
    active = [a for a in getattr(wrapper, "active_adapters", ()) if a in getattr(wrapper, "lora_A", {})]
    if type(wrapper).__name__ != "Linear" or getattr(wrapper, "merged", False) or len(active) > 1:
        return False
    if getattr(wrapper, "lora_variant", {}) or getattr(wrapper, "fan_in_fan_out", False):
        return False
    for name in active:
        a, b = wrapper.lora_A[name], wrapper.lora_B[name]
        if type(a) is not torch.nn.Linear or type(b) is not torch.nn.Linear or a.bias is not None or b.bias is not None:
            return False
        if not (_plain(a.weight) and _plain(b.weight)) or not isinstance(wrapper.lora_dropout[name], (torch.nn.Dropout, torch.nn.Identity)):
            return False
    return True


def supports(model: torch.nn.Module, training: Optional[bool] = None) -> bool:
    """Whether the plain decoder computes what `model(...)` computes (else: use the model).

    training: whether the forward runs in training mode (default: the model's mode); then
    attention dropout or gradient checkpointing keep the transformers path.
    """
    if not ENABLED:
        return False
    try:
        lm = causal_lm(model)
        training = lm.training if training is None else training
        cfg, body = lm.config, lm.model
        if getattr(cfg, "model_type", None) not in ARCHITECTURES or getattr(cfg, "hidden_act", "silu") != "silu":
            return False
        if (getattr(cfg, "rope_parameters", None) or {}).get("rope_type", "default") != "default":
            return False
        if getattr(body.rotary_emb, "rope_type", "default") != "default" or getattr(cfg, "mlp_bias", False):
            return False
        if getattr(cfg, "use_sliding_window", False) or "sliding_attention" in (getattr(cfg, "layer_types", None) or ()):
            return False
        if training and (getattr(cfg, "attention_dropout", 0.0) or getattr(body, "gradient_checkpointing", False)):
            return False
        # accelerate's mixed precision wraps forward in autocast: keep that path
        if any(hasattr(m, "_original_forward") for m in (model, lm)) or getattr(cfg, "_attn_implementation", "sdpa") not in ("sdpa", "eager"):
            return False
        if len(body.layers) != cfg.num_hidden_layers:
            return False
        for layer in body.layers:
            for name in (*ATTENTION, *MLP):
                base, lora = _parts(layer, name)
                if type(base) is not torch.nn.Linear or not (_plain(base.weight) and _plain(base.bias)):
                    return False
                if name in MLP and base.bias is not None or name == "o_proj" and base.bias is not None:
                    return False
                if lora is not None and not _vanilla_lora(lora):
                    return False
        head = lm.lm_head
        return type(head) is torch.nn.Linear and head.bias is None and _plain(head.weight) and _plain(body.embed_tokens.weight)
    except AttributeError:
        return False


# ---------------------------------------------------------------- the weights of one use
@dataclass
class Lora:
    """One projection's adapter as live parameters: autograd reaches A and B."""
    A: Tensor  # [r, in]
    B: Tensor  # [out, r]
    scale: float
    dropout: float  # applied to the adapter's input (0 unless the dropout module is training)


@dataclass
class LayerWeights:
    ln1: Tensor  # [E]
    ln2: Tensor  # [E]
    qkv: Tensor  # [(H + 2K) D, E]: q, k, v stacked
    qkv_bias: Optional[Tensor]  # [(H + 2K) D]
    o: Tensor  # [E, H D]
    gate_up: Tensor  # [2F, E]: gate, up stacked
    down: Tensor  # [E, F]
    lora: dict[str, Lora] = field(default_factory=dict)  # adapters kept apart from the weights


@dataclass
class Weights:
    embed: Tensor  # [V, E]
    layers: list[LayerWeights]
    norm: Tensor  # [E]
    head: Tensor  # [V, E]
    inv_freq: Tensor  # [D / 2]
    rope_scale: float
    eps: float
    heads: int  # H
    kv_heads: int  # K
    head_dim: int  # D


def _adapter(wrapper: Optional[torch.nn.Module]) -> Optional[Lora]:
    if wrapper is None or getattr(wrapper, "disable_adapters", False):
        return None
    for name in wrapper.active_adapters:
        if name in wrapper.lora_A:
            drop = wrapper.lora_dropout[name]
            p = drop.p if isinstance(drop, torch.nn.Dropout) and drop.training else 0.0
            return Lora(wrapper.lora_A[name].weight, wrapper.lora_B[name].weight, float(wrapper.scaling[name]), p)
    return None


_FUSED: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _fused_base(lm: torch.nn.Module) -> list[tuple[Tensor, Optional[Tensor], Tensor]]:
    """Per layer (qkv, qkv bias, gate_up) of the base weights; cached while none of them changes."""
    tensors = [t for layer in lm.model.layers for n in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
               for t in (_parts(layer, n)[0].weight, _parts(layer, n)[0].bias) if t is not None]
    track = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    key = tuple((t.data_ptr(), t._version) for t in tensors)
    hit = _FUSED.get(lm)
    if not track and hit is not None and hit[0] == key:
        return hit[1]
    fused = []
    for layer in lm.model.layers:
        lin = {n: _parts(layer, n)[0] for n in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")}
        bias = None if lin["q_proj"].bias is None else torch.cat([lin[n].bias for n in ("q_proj", "k_proj", "v_proj")])
        fused.append((torch.cat([lin[n].weight for n in ("q_proj", "k_proj", "v_proj")]), bias,
                      torch.cat([lin["gate_proj"].weight, lin["up_proj"].weight])))
    if not track:
        _FUSED[lm] = (key, fused)
    return fused


def snapshot(model: torch.nn.Module, *, adapter: bool = True, merge: Optional[bool] = None) -> Weights:
    """The model's weights for the plain decoder.

    adapter: use the active LoRA adapter (unless peft has it disabled); False gives the base model.
    merge: fold the adapter into the weights (W + scale * B @ A, no grad: sampling) instead of
        keeping A and B apart (the policy forward: autograd reaches them, dropout applies).
        None: merge when no gradient is recorded and no adapter dropout is active.
    """
    lm = causal_lm(model)
    cfg, body = lm.config, lm.model
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    layers = []
    for layer, (qkv, qkv_bias, gate_up) in zip(body.layers, _fused_base(lm)):
        parts = {n: _parts(layer, n) for n in (*ATTENTION, *MLP)}
        adapters = {n: a for n, (_, wrapper) in parts.items() if adapter and (a := _adapter(wrapper)) is not None}
        weights = {n: parts[n][0].weight for n in ("o_proj", "down_proj")}
        if merge is None:
            merge = not torch.is_grad_enabled() and not any(a.dropout for a in adapters.values())
        if merge and adapters:
            with torch.no_grad():
                merged = {n: parts[n][0].weight + (a.B @ a.A) * a.scale for n, a in adapters.items()}
                weights.update({n: merged[n] for n in merged if n in weights})
                if any(n in merged for n in ("q_proj", "k_proj", "v_proj")):
                    qkv = torch.cat([merged.get(n, parts[n][0].weight) for n in ("q_proj", "k_proj", "v_proj")])
                if any(n in merged for n in ("gate_proj", "up_proj")):
                    gate_up = torch.cat([merged.get(n, parts[n][0].weight) for n in ("gate_proj", "up_proj")])
            adapters = {}
        layers.append(LayerWeights(ln1=layer.input_layernorm.weight, ln2=layer.post_attention_layernorm.weight,
                                   qkv=qkv, qkv_bias=qkv_bias, o=weights["o_proj"], gate_up=gate_up,
                                   down=weights["down_proj"], lora=adapters))
    rotary = body.rotary_emb
    return Weights(embed=body.embed_tokens.weight, layers=layers, norm=body.norm.weight, head=lm.lm_head.weight,
                   inv_freq=rotary.inv_freq, rope_scale=float(rotary.attention_scaling), eps=float(cfg.rms_norm_eps),
                   heads=heads, kv_heads=kv_heads, head_dim=head_dim)


# ---------------------------------------------------------------- caches of keys and values
class KVCache:
    """Preallocated keys and values of every layer (sampling: no autograd)."""

    def __init__(self, w: Weights, batch: int, capacity: int, dtype: torch.dtype, device: torch.device):
        shape = (len(w.layers), batch, w.kv_heads, capacity, w.head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.length = 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        end = self.length + k.shape[2]
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class ListCache:
    """Keys and values as a list of tensors (autograd-safe: nothing is written in place)."""

    def __init__(self, past: Optional[list[tuple[Tensor, Tensor]]] = None):
        self.layers = list(past or [])
        self.length = self.layers[0][0].shape[2] if self.layers else 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if layer < len(self.layers):
            pk, pv = self.layers[layer]
            k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
            self.layers[layer] = (k, v)
        else:
            self.layers.append((k, v))
        return k, v


# ---------------------------------------------------------------- the decoder
def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def rope(position_ids: Tensor, w: Weights, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos, sin [N, T, D], computed as transformers computes them."""
    freqs = position_ids[..., None].float() * w.inv_freq.to(device=position_ids.device, dtype=torch.float)
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * w.rope_scale).to(dtype), (emb.sin() * w.rope_scale).to(dtype)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def _project(x: Tensor, weight: Tensor, bias: Optional[Tensor], lw: LayerWeights, names: tuple[str, ...],
             sizes: list[int]) -> Tensor:
    """One matmul for the base weights of `names` (stacked), plus each unmerged adapter's update."""
    y = F.linear(x, weight, bias)
    adapters = [(i, lw.lora[n]) for i, n in enumerate(names) if n in lw.lora]
    if not adapters:
        return y
    outs = list(y.split(sizes, -1))
    for i, a in adapters:  # as peft: result + lora_B(lora_A(dropout(x))) * scaling
        xa = F.dropout(x, a.dropout, training=True) if a.dropout else x
        outs[i] = outs[i] + F.linear(F.linear(xa, a.A), a.B) * a.scale
    return torch.cat(outs, -1) if len(outs) > 1 else outs[0]


def forward(w: Weights, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, *,
            logits_to_keep: int = 0, cache=None) -> Tensor:
    """Logits [N, T (or logits_to_keep), V] of a left-padded batch of T new tokens.

    attention_mask: [N, S] over the cached positions and the new ones (S = cached + T).
    cache: a KVCache or ListCache that receives this batch's keys and values (None: no past).
    """
    N, T = input_ids.shape
    H, K, D = w.heads, w.kv_heads, w.head_dim
    start = cache.length if cache is not None else 0
    x = F.embedding(input_ids, w.embed)  # [N, T, E]
    cos, sin = rope(position_ids, w, x.dtype)
    cos, sin = cos[:, None], sin[:, None]  # [N, 1, T, D]
    mask = attention_mask.bool()[:, None, None, :]  # [N, 1, 1, S]
    if T > 1:  # causal among the new tokens; each query also sees itself, so padded rows stay finite
        rows = torch.arange(T, device=x.device)[:, None]
        cols = torch.arange(start + T, device=x.device)[None, :]
        mask = (mask & (cols <= rows + start)) | (cols == rows + start)  # [N, 1, T, S]
    sizes = [H * D, K * D, K * D]
    for i, lw in enumerate(w.layers):
        h = rms_norm(x, lw.ln1, w.eps)
        q, k, v = _project(h, lw.qkv, lw.qkv_bias, lw, ("q_proj", "k_proj", "v_proj"), sizes).split(sizes, -1)
        q = _rotate(q.view(N, T, H, D).transpose(1, 2), cos, sin)  # [N, H, T, D]
        k = _rotate(k.view(N, T, K, D).transpose(1, 2), cos, sin)  # [N, K, T, D]
        v = v.view(N, T, K, D).transpose(1, 2)  # [N, K, T, D]
        if cache is not None:
            k, v = cache.update(i, k, v)  # [N, K, S, D]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=D ** -0.5, enable_gqa=H != K)
        a = a.transpose(1, 2).reshape(N, T, H * D)
        x = x + _project(a, lw.o, None, lw, ("o_proj",), [lw.o.shape[0]])
        h = rms_norm(x, lw.ln2, w.eps)
        gate, up = _project(h, lw.gate_up, None, lw, ("gate_proj", "up_proj"), [lw.down.shape[1]] * 2).chunk(2, -1)
        x = x + _project(F.silu(gate) * up, lw.down, None, lw, ("down_proj",), [lw.down.shape[0]])
    if cache is not None:
        cache.length += T
    if logits_to_keep:
        x = x[:, -logits_to_keep:]
    return F.linear(rms_norm(x, w.norm, w.eps), w.head)


# ---------------------------------------------------------------- what the engine and the loss call
def distinct_prompts(prompt_ids: Tensor, prompt_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(unique prompt ids [U, P], their masks [U, P], row -> unique index [N])."""
    P = prompt_ids.shape[1]
    uniq, inverse = torch.unique(torch.cat([prompt_ids, prompt_mask.to(prompt_ids.dtype)], 1), dim=0, return_inverse=True)
    return uniq[:, :P], uniq[:, P:].to(prompt_mask.dtype), inverse


def completion_logits(w: Weights, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                      completion_mask: Tensor) -> Tensor:
    """Logits that predict each completion token: [N, C, V].

    Each distinct prompt runs once; the completions attend to its shared keys and values.
    The same numbers as one forward over prompt + completion (position ids skip left padding).
    """
    N, P = prompt_ids.shape
    C = completion_ids.shape[1]
    u_ids, u_mask, inverse = distinct_prompts(prompt_ids, prompt_mask)
    prefix = ListCache()
    u_pos = (u_mask.cumsum(1) - 1).clamp(min=0)
    first = forward(w, u_ids, u_mask, u_pos, logits_to_keep=1, cache=prefix)  # [U, 1, V]
    first = first.index_select(0, inverse)  # [N, 1, V]
    if C == 1:
        return first
    past = [(k.index_select(0, inverse), v.index_select(0, inverse)) for k, v in prefix.layers]  # [N, K, P, D]
    attention = torch.cat([prompt_mask, completion_mask[:, :-1]], 1)  # [N, P + C - 1]
    positions = (attention.cumsum(1) - 1).clamp(min=0)[:, P:]  # [N, C - 1]
    # the last completion token predicts nothing: it is never run
    rest = forward(w, completion_ids[:, :-1], attention, positions, cache=ListCache(past))
    return torch.cat([first, rest], 1)  # [N, C, V]


@torch.no_grad()
def sample(w: Weights, prompt_ids: Tensor, prompt_mask: Tensor, max_new_tokens: int,
           choose: Callable[[int, Tensor], tuple[Tensor, bool]]) -> Tensor:
    """Completion ids [N, <= max_new_tokens] from a KV-cached loop.

    choose(step, logits [N, V] float32) -> (next tokens [N], whether every row has finished).
    """
    N, P = prompt_ids.shape
    device = prompt_ids.device
    u_ids, u_mask, inverse = distinct_prompts(prompt_ids, prompt_mask)
    prefix = KVCache(w, u_ids.shape[0], P, w.embed.dtype, device)
    u_pos = (u_mask.cumsum(1) - 1).clamp(min=0)
    logits = forward(w, u_ids, u_mask, u_pos, logits_to_keep=1, cache=prefix)[:, -1].float().index_select(0, inverse)
    cache = KVCache(w, N, P + max_new_tokens, w.embed.dtype, device)
    cache.k[:, :, :, :P] = prefix.k.index_select(1, inverse)
    cache.v[:, :, :, :P] = prefix.v.index_select(1, inverse)
    cache.length = P
    attention = torch.ones(N, P + max_new_tokens, dtype=prompt_mask.dtype, device=device)
    attention[:, :P] = prompt_mask
    position = (prompt_mask.sum(1, keepdim=True) - 1).clamp(min=0)  # [N, 1] the last prompt token's
    out = torch.empty(N, max_new_tokens, dtype=prompt_ids.dtype, device=device)
    for t in range(max_new_tokens):
        tokens, finished = choose(t, logits)
        out[:, t] = tokens
        if finished or t + 1 == max_new_tokens:
            return out[:, :t + 1]
        position = position + 1
        logits = forward(w, tokens[:, None], attention[:, :P + t + 1], position, logits_to_keep=1, cache=cache)[:, -1].float()
    return out
