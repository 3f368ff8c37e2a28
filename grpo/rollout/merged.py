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
window, silu MLP, unsharded unquantised weights, vanilla LoRA, no autocast wrapper, fused copies
up to MAX_FUSED_BYTES. Anything else (a DDP-wrapped policy included) keeps the transformers path.
tests/test_rollout.py pins the results to transformers' and peft's; docs/performance.md has
what each part gains.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Switches:
    """What the plain decoder does; the defaults are the fast, exact path. Other settings serve
    comparisons and debugging (python -m grpo.bench --ladder), through `configure`/`switched`."""

    enabled: bool = True  # False: every caller takes the transformers path
    share_prompts: bool = True  # False: every row runs its own prompt, as a forward over the padded batch does
    # With LoRA dropout active (the policy forward in training), peft draws a dropout mask per row;
    # running a prompt once for its group gives the group one mask on the prompt's tokens (each row's
    # distribution is the same, rows of a group are no longer independent). False keeps peft's
    # per-row masks: prompts are then shared only where no dropout is active.
    share_prompt_under_dropout: bool = False


SWITCHES = Switches()


def configure(**changes: bool) -> None:
    """Set switches by name (enabled, share_prompts, share_prompt_under_dropout)."""
    for name, value in changes.items():
        if not hasattr(SWITCHES, name):
            raise TypeError(f"no decoder switch {name!r}")
        setattr(SWITCHES, name, value)


@contextmanager
def switched(**changes: bool) -> Iterator[None]:
    """The switches changed inside the block, restored after it."""
    before = replace(SWITCHES)
    configure(**changes)
    try:
        yield
    finally:
        configure(**vars(before))


# The fused q/k/v and gate/up copies are kept beside the model's weights: larger models keep the
# transformers path rather than hold that much twice.
MAX_FUSED_BYTES = 1 << 30
ARCHITECTURES = ("qwen2", "llama")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


# ---------------------------------------------------------------- which models qualify
def causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers causal LM under a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _plain(t: Tensor | None) -> bool:
    """A dense tensor with all its values here: not an FSDP/DTensor shard, not a ZeRO-3 or meta placeholder."""
    return t is None or (type(t.data) is torch.Tensor and t.numel() > 0 and not t.is_meta and t.layout == torch.strided)


@dataclass
class _Plan:
    """A model's projections, found and checked once: per layer, name -> (nn.Linear, peft LoRA wrapper or None)."""

    layers: list[dict[str, tuple[torch.nn.Linear, torch.nn.Module | None]]]
    wrappers: list[torch.nn.Module]


_PLANS: weakref.WeakKeyDictionary[torch.nn.Module, _Plan | None] = weakref.WeakKeyDictionary()


def _lora_structure(wrapper: torch.nn.Module) -> bool:
    """A peft LoRA Linear whose adapters are plain A and B without bias and no DoRA/other variant."""
    if type(wrapper).__name__ != "Linear" or getattr(wrapper, "fan_in_fan_out", False):
        return False
    for name in wrapper.lora_A:
        a, b = wrapper.lora_A[name], wrapper.lora_B[name]
        if type(a) is not torch.nn.Linear or type(b) is not torch.nn.Linear or a.bias is not None or b.bias is not None:
            return False
        if not (_plain(a.weight) and _plain(b.weight)) or not isinstance(
            wrapper.lora_dropout[name], (torch.nn.Dropout, torch.nn.Identity)
        ):
            return False
    return True


def _make_plan(lm: torch.nn.Module) -> _Plan | None:
    cfg, body = lm.config, lm.model
    if getattr(cfg, "model_type", None) not in ARCHITECTURES or getattr(cfg, "hidden_act", "silu") != "silu":
        return None
    if (getattr(cfg, "rope_parameters", None) or {}).get("rope_type", "default") != "default":
        return None
    if getattr(body.rotary_emb, "rope_type", "default") != "default" or getattr(cfg, "mlp_bias", False):
        return None
    if getattr(cfg, "use_sliding_window", False) or "sliding_attention" in (getattr(cfg, "layer_types", None) or ()):
        return None
    if len(body.layers) != cfg.num_hidden_layers:
        return None
    head = lm.lm_head
    if (
        type(head) is not torch.nn.Linear
        or head.bias is not None
        or not (_plain(head.weight) and _plain(body.embed_tokens.weight))
    ):
        return None
    layers, wrappers = [], []
    for layer in body.layers:
        parts = {}
        for name in (*ATTENTION, *MLP):
            module = getattr(layer.self_attn if name in ATTENTION else layer.mlp, name)
            base = getattr(module, "base_layer", None)
            base, wrapper = (base, module) if base is not None else (module, None)
            if type(base) is not torch.nn.Linear or not (_plain(base.weight) and _plain(base.bias)):
                return None
            if base.bias is not None and name not in ("q_proj", "k_proj", "v_proj"):
                return None
            if wrapper is not None:
                if not _lora_structure(wrapper):
                    return None
                wrappers.append(wrapper)
            parts[name] = (base, wrapper)
        layers.append(parts)
    fused = sum(
        parts[n][0].weight.nbytes for parts in layers for n in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
    )
    return _Plan(layers, wrappers) if fused <= MAX_FUSED_BYTES else None


def _plan(model: torch.nn.Module) -> _Plan | None:
    lm = causal_lm(model)
    if lm not in _PLANS:
        try:
            _PLANS[lm] = _make_plan(lm)
        except AttributeError:
            _PLANS[lm] = None
    return _PLANS[lm]


def supports(model: torch.nn.Module, training: bool | None = None) -> bool:
    """Whether the plain decoder computes what `model(...)` computes (else: use the model).

    training: whether the forward runs in training mode (default: the model's mode); then
    attention dropout or gradient checkpointing keep the transformers path.
    """
    if not SWITCHES.enabled:
        return False
    try:
        plan = _plan(model)
    except TypeError:  # not weak-referenceable: not a module we know
        return False
    if plan is None:
        return False
    lm = causal_lm(model)
    cfg = lm.config
    training = lm.training if training is None else training
    if training and (getattr(cfg, "attention_dropout", 0.0) or getattr(lm.model, "gradient_checkpointing", False)):
        return False
    # accelerate's mixed precision wraps forward in autocast: keep that path
    if hasattr(model, "_original_forward") or hasattr(lm, "_original_forward"):
        return False
    if getattr(cfg, "_attn_implementation", "sdpa") not in ("sdpa", "eager"):
        return False
    first = plan.layers[0]["q_proj"][0]
    if not (_plain(first.weight) and _plain(lm.lm_head.weight)):  # sharded in place since (FSDP2)
        return False
    for wrapper in plan.wrappers:  # peft state that can change between calls
        active = [a for a in wrapper.active_adapters if a in wrapper.lora_A]
        if wrapper.merged or len(active) > 1 or any(a in wrapper.lora_variant for a in active):
            return False
    return True


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
    qkv_bias: Tensor | None  # [(H + 2K) D]
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


def _adapter(wrapper: torch.nn.Module | None) -> Lora | None:
    if wrapper is None or getattr(wrapper, "disable_adapters", False):
        return None
    for name in wrapper.active_adapters:
        if name in wrapper.lora_A:
            drop = wrapper.lora_dropout[name]
            p = drop.p if isinstance(drop, torch.nn.Dropout) and drop.training else 0.0
            return Lora(wrapper.lora_A[name].weight, wrapper.lora_B[name].weight, float(wrapper.scaling[name]), p)
    return None


_FUSED: weakref.WeakKeyDictionary[torch.nn.Module, tuple] = weakref.WeakKeyDictionary()


def _fused_base(lm: torch.nn.Module, plan: _Plan) -> list[tuple[Tensor, Tensor | None, Tensor]]:
    """Per layer (qkv, qkv bias, gate_up) of the base weights; cached while none of them changes."""
    tensors = [
        t
        for parts in plan.layers
        for n in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
        for t in (parts[n][0].weight, parts[n][0].bias)
        if t is not None
    ]
    track = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    key = tuple((t.data_ptr(), t._version) for t in tensors)
    hit = _FUSED.get(lm)
    if not track and hit is not None and hit[0] == key:
        return hit[1]
    fused = []
    for parts in plan.layers:
        lin = {n: parts[n][0] for n in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")}
        bias = None if lin["q_proj"].bias is None else torch.cat([lin[n].bias for n in ("q_proj", "k_proj", "v_proj")])
        fused.append(
            (
                torch.cat([lin[n].weight for n in ("q_proj", "k_proj", "v_proj")]),
                bias,
                torch.cat([lin["gate_proj"].weight, lin["up_proj"].weight]),
            )
        )
    if not track:
        _FUSED[lm] = (key, fused)
    return fused


def snapshot(model: torch.nn.Module, *, adapter: bool = True, merge: bool | None = None) -> Weights:
    """The model's weights for the plain decoder (`supports(model)` must hold).

    adapter: use the active LoRA adapter (unless peft has it disabled); False gives the base model.
    merge: fold the adapter into the weights (W + scale * B @ A, no grad: sampling) instead of
        keeping A and B apart (the policy forward: autograd reaches them, dropout applies).
        None: merge when no gradient is recorded and no adapter dropout is active.
    """
    lm = causal_lm(model)
    plan = _plan(model)
    cfg, body = lm.config, lm.model
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    per_layer = [
        {n: a for n, (_, wrapper) in parts.items() if adapter and (a := _adapter(wrapper)) is not None}
        for parts in plan.layers
    ]
    if merge is None:
        merge = not torch.is_grad_enabled() and not any(a.dropout for adapters in per_layer for a in adapters.values())
    layers = []
    for layer, parts, adapters, (qkv, qkv_bias, gate_up) in zip(
        body.layers, plan.layers, per_layer, _fused_base(lm, plan)
    ):
        weights = {n: parts[n][0].weight for n in ("o_proj", "down_proj")}
        if merge and adapters:
            with torch.no_grad():
                merged = {n: parts[n][0].weight + (a.B @ a.A) * a.scale for n, a in adapters.items()}
                weights.update({n: merged[n] for n in merged if n in weights})
                if any(n in merged for n in ("q_proj", "k_proj", "v_proj")):
                    qkv = torch.cat([merged.get(n, parts[n][0].weight) for n in ("q_proj", "k_proj", "v_proj")])
                if any(n in merged for n in ("gate_proj", "up_proj")):
                    gate_up = torch.cat([merged.get(n, parts[n][0].weight) for n in ("gate_proj", "up_proj")])
            adapters = {}
        layers.append(
            LayerWeights(
                ln1=layer.input_layernorm.weight,
                ln2=layer.post_attention_layernorm.weight,
                qkv=qkv,
                qkv_bias=qkv_bias,
                o=weights["o_proj"],
                gate_up=gate_up,
                down=weights["down_proj"],
                lora=adapters,
            )
        )
    rotary = body.rotary_emb
    return Weights(
        embed=body.embed_tokens.weight,
        layers=layers,
        norm=body.norm.weight,
        head=lm.lm_head.weight,
        inv_freq=rotary.inv_freq,
        rope_scale=float(rotary.attention_scaling),
        eps=float(cfg.rms_norm_eps),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
    )


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
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class ListCache:
    """Keys and values as a list of tensors (autograd-safe: nothing is written in place)."""

    def __init__(self, past: list[tuple[Tensor, Tensor]] | None = None):
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
    if x.dtype == weight.dtype == torch.float32:  # one fused op; the same numbers
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
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


def dropout(x: Tensor, p: float) -> Tensor:
    """`F.dropout(x, p)` in training mode, drawn sparsely: i.i.d. Bernoulli(p) drops are a
    Bernoulli process, so the gaps between drops are Geometric(p) and ~p*n uniform draws place
    every drop, instead of n draws (PyTorch's CPU `bernoulli_` draws 64 bits per entry, serially).
    Same distribution, another use of the random stream; 2-4x cheaper at p = 0.05."""
    if x.device.type != "cpu" or not 0.0 < p <= 0.25:  # dense masks: the gaps would cost as much
        return F.dropout(x, p, training=True)
    n = x.numel()
    log_keep = math.log1p(-p)
    expected = n * p
    draws = int(expected + 8 * math.sqrt(expected * (1 - p))) + 16  # enough gaps to pass n, nearly always
    chunks, last = [], -1.0
    while last < n:
        gaps = torch.floor(
            torch.log1p(-torch.rand(draws, dtype=torch.float64)) / log_keep
        )  # Geometric(p) on {0, 1, ...}
        where = last + torch.cumsum(gaps + 1, 0)  # positions of the next drops
        chunks.append(where)
        last = float(where[-1])
    where = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
    out = x * (1.0 / (1.0 - p))
    out.view(-1)[where[where < n].long()] = 0.0
    return out


def _lora_update(x: Tensor, adapters: list[Lora]) -> Tensor:
    """The adapters' updates to projections that share the input x, side by side [..., sum of outs]:
    as peft, lora_B(lora_A(dropout(x))) * scaling, each adapter with its own dropout mask."""
    if len(adapters) == 1:
        a = adapters[0]
        xa = dropout(x, a.dropout) if a.dropout else x
        return F.linear(F.linear(xa, a.A), a.B) * a.scale
    ps = {a.dropout for a in adapters}
    if len(ps) == 1 and (p := ps.pop()):  # one draw for all masks: [n_adapters, ..., E]
        xa = dropout(x.expand(len(adapters), *x.shape), p)
        if len({a.A.shape for a in adapters}) == 1:  # one batched matmul: [n, M, E] @ [n, E, r]
            z = torch.bmm(xa.reshape(len(adapters), -1, x.shape[-1]), torch.stack([a.A.t() for a in adapters]))
            z = z.permute(1, 0, 2).reshape(*x.shape[:-1], -1)  # [..., n r]
        else:
            z = torch.cat([F.linear(xa[i], a.A) for i, a in enumerate(adapters)], -1)
    elif ps == {0.0}:
        z = F.linear(x, torch.cat([a.A for a in adapters]))  # [..., sum of ranks]
    else:
        z = torch.cat([F.linear(dropout(x, a.dropout) if a.dropout else x, a.A) for a in adapters], -1)
    return F.linear(z, torch.block_diag(*[a.B * a.scale for a in adapters]))


def _project(
    x: Tensor, weight: Tensor, bias: Tensor | None, lw: LayerWeights, names: tuple[str, ...], sizes: list[int]
) -> Tensor:
    """One matmul for the base weights of `names` (stacked), plus the unmerged adapters' updates."""
    y = F.linear(x, weight, bias)
    present = [n in lw.lora for n in names]
    if not any(present):
        return y
    if all(present):
        return y + _lora_update(x, [lw.lora[n] for n in names])
    outs = list(y.split(sizes, -1))
    for i, n in enumerate(names):
        if present[i]:
            outs[i] = outs[i] + _lora_update(x, [lw.lora[n]])
    return torch.cat(outs, -1)


def forward(
    w: Weights, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, *, logits_to_keep: int = 0, cache=None
) -> Tensor:
    """Logits [N, T (or logits_to_keep), V] of a left-padded batch of T new tokens.

    attention_mask: [N, S] over the cached positions and the new ones (S = cached + T).
    cache: a KVCache or ListCache that receives this batch's keys and values (None: no past).
    logits_to_keep: only the last positions' logits; the last layer then runs its attention
        output and MLP on those positions only (the others' keys and values are all it needs).
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
    last = len(w.layers) - 1
    for i, lw in enumerate(w.layers):
        h = rms_norm(x, lw.ln1, w.eps)
        qkv = _project(h, lw.qkv, lw.qkv_bias, lw, ("q_proj", "k_proj", "v_proj"), sizes)  # [N, T, (H + 2K) D]
        qk = _rotate(qkv[..., : (H + K) * D].view(N, T, H + K, D).transpose(1, 2), cos, sin)  # [N, H + K, T, D]
        q, k = qk[:, :H], qk[:, H:]  # [N, H, T, D], [N, K, T, D]
        v = qkv[..., (H + K) * D :].view(N, T, K, D).transpose(1, 2)  # [N, K, T, D]
        if cache is not None:
            k, v = cache.update(i, k, v)  # [N, K, S, D]
        if i == last and 0 < logits_to_keep < T:  # from here on only the kept positions matter
            q, x, T = q[:, :, -logits_to_keep:], x[:, -logits_to_keep:], logits_to_keep
            mask = mask[:, :, -T:] if mask.shape[2] > 1 else mask
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=D**-0.5, enable_gqa=H != K)
        a = a.transpose(1, 2).reshape(N, T, H * D)
        x = x + _project(a, lw.o, None, lw, ("o_proj",), [lw.o.shape[0]])
        h = rms_norm(x, lw.ln2, w.eps)
        gate, up = _project(h, lw.gate_up, None, lw, ("gate_proj", "up_proj"), [lw.down.shape[1]] * 2).chunk(2, -1)
        x = x + _project(F.silu(gate) * up, lw.down, None, lw, ("down_proj",), [lw.down.shape[0]])
    if cache is not None:
        cache.length += input_ids.shape[1]
    if logits_to_keep:
        x = x[:, -logits_to_keep:]
    return F.linear(rms_norm(x, w.norm, w.eps), w.head)


# ---------------------------------------------------------------- what the engine and the loss call
def distinct_prompts(prompt_ids: Tensor, prompt_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(unique prompt ids [U, P], their masks [U, P], row -> unique index [N])."""
    if not SWITCHES.share_prompts:
        return prompt_ids, prompt_mask, torch.arange(prompt_ids.shape[0], device=prompt_ids.device)
    P = prompt_ids.shape[1]
    uniq, inverse = torch.unique(
        torch.cat([prompt_ids, prompt_mask.to(prompt_ids.dtype)], 1), dim=0, return_inverse=True
    )
    return uniq[:, :P], uniq[:, P:].to(prompt_mask.dtype), inverse


def completion_logits(
    w: Weights, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor, completion_mask: Tensor
) -> Tensor:
    """Logits that predict each completion token: [N, C, V].

    The same numbers as one forward over prompt + completion (position ids skip left padding),
    with less work: the last completion token, which predicts nothing, is not run, and each
    distinct prompt runs once, its keys and values shared by its rows (unless LoRA dropout is
    active: see Switches.share_prompt_under_dropout).
    """
    N, P = prompt_ids.shape
    C = completion_ids.shape[1]
    attention = torch.cat([prompt_mask, completion_mask[:, :-1]], 1)  # [N, P + C - 1]
    positions = (attention.cumsum(1) - 1).clamp(min=0)  # [N, P + C - 1]
    dropout = any(a.dropout for lw in w.layers for a in lw.lora.values())
    share = SWITCHES.share_prompts and (SWITCHES.share_prompt_under_dropout or not dropout)
    u_ids, u_mask, inverse = distinct_prompts(prompt_ids, prompt_mask) if share else (prompt_ids, prompt_mask, None)
    if u_ids.shape[0] == N:  # nothing to share: one forward per row over prompt + completion
        return forward(w, torch.cat([prompt_ids, completion_ids[:, :-1]], 1), attention, positions, logits_to_keep=C)
    prefix = ListCache()
    u_pos = (u_mask.cumsum(1) - 1).clamp(min=0)
    first = forward(w, u_ids, u_mask, u_pos, logits_to_keep=1, cache=prefix).index_select(0, inverse)  # [N, 1, V]
    if C == 1:
        return first
    past = [(k.index_select(0, inverse), v.index_select(0, inverse)) for k, v in prefix.layers]  # [N, K, P, D]
    rest = forward(w, completion_ids[:, :-1], attention, positions[:, P:], cache=ListCache(past))  # [N, C - 1, V]
    return torch.cat([first, rest], 1)  # [N, C, V]


@torch.no_grad()
def sample(
    w: Weights,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    max_new_tokens: int,
    choose: Callable[[int, Tensor], tuple[Tensor, bool]],
) -> Tensor:
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
            return out[:, : t + 1]
        position = position + 1
        logits = forward(w, tokens[:, None], attention[:, : P + t + 1], position, logits_to_keep=1, cache=cache)[
            :, -1
        ].float()
    return out
