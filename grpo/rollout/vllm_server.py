"""Rollouts on an external vLLM server over its OpenAI-compatible HTTP API
(`rollout.engine=vllm_server`), as TRL's server mode.

The server runs elsewhere (other GPUs, another machine) on the run's base weights, started with
runtime LoRA loading:

    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True python -m vllm.entrypoints.openai.api_server \\
        --model DIR --enable-lora --max-lora-rank 8 --logprobs-mode processed_logprobs

Before a rollout, when the policy changed (`vllm_weights.fingerprint`), its LoRA adapter is
saved under `rollout.sync_dir` (a directory both sides read) and loaded with
`/v1/load_lora_adapter` under a new name; the previous one is unloaded. Completions are requested
per row from `/v1/completions` with token-id prompts, a seed drawn from the run's generator, the
sampled tokens' ids and log-probs. Nothing here imports vLLM: only HTTP (the standard library).

Bad input fails in one line: an unreachable server after `rollout.server_retries` attempts
(waits 1, 2, 4 ... s) naming the URL; a server that serves another model than the run's.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from grpo.config.errors import ConfigError
from grpo.config.schema import RolloutConfig
from grpo.rollout import vllm_weights as vw
from grpo.rollout.engine import HFGenerateEngine, Rollout, SamplingParams
from grpo.rollout.vllm_engine import completions_to_rollout, request_seeds

MAX_PARALLEL_REQUESTS = 32


class Server:
    """JSON over HTTP to one server, each call retried on connection failures only."""

    def __init__(self, url: str, timeout: float, retries: int):
        self.url, self.timeout, self.retries = url.rstrip("/"), timeout, retries

    def call(self, path: str, payload: dict | None = None):
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            headers={"Content-Type": "application/json"},
            method="GET" if data is None else "POST",
        )
        waited, reason = 0.0, ""
        for attempt in range(self.retries):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    body = response.read().decode()
                try:
                    return json.loads(body) if body else {}
                except json.JSONDecodeError:
                    return body  # /v1/load_lora_adapter answers plain text
            except urllib.error.HTTPError as exc:  # the server answered: retrying will not help
                detail = exc.read().decode(errors="replace").replace("\n", " ")[:300]
                raise ConfigError("rollout.server_url", self.url, f"{path} answered HTTP {exc.code}: {detail}") from exc
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
                reason = str(getattr(exc, "reason", exc))
                if attempt + 1 < self.retries:
                    pause = min(2.0**attempt, 30.0)
                    time.sleep(pause)
                    waited += pause
        raise ConfigError(
            "rollout.server_url",
            self.url,
            f"no vLLM server answered {path} after {self.retries} attempts over {waited:.0f} s ({reason}); "
            "start it (README: rollouts on vLLM) or fix rollout.server_url",
        )


def _same_model(entry: dict, expected: str) -> bool:
    names = {expected, os.path.realpath(expected) if os.path.exists(expected) else expected}
    served = {entry.get("id"), entry.get("root")}
    served |= {os.path.realpath(s) for s in served if isinstance(s, str) and os.path.exists(s)}
    return bool(names & served)


def check_served_model(server: Server, expected: str) -> dict:
    """The server's base model entry; one line when it serves another model than the run's."""
    models = server.call("/v1/models").get("data", [])
    bases = [m for m in models if not m.get("parent")]
    for entry in bases:
        if _same_model(entry, expected):
            return entry
    served = ", ".join(str(m.get("root") or m.get("id")) for m in bases) or "nothing"
    raise ConfigError(
        "rollout.server_model",
        expected,
        f"the server at {server.url} serves {served}, not the run's model: start it with --model {expected}, "
        "or point rollout.server_url at the server that does",
    )


class VLLMServerEngine(HFGenerateEngine):
    """`generate` through a vLLM server; the policy's LoRA adapter pushed before each rollout."""

    def __init__(self, tokenizer, model: torch.nn.Module, cfg: RolloutConfig, *, served: str):
        super().__init__(tokenizer)
        self.cfg = cfg
        self.server = Server(cfg.server_url, cfg.server_timeout, cfg.server_retries)
        self.served = served
        self.model_entry = check_served_model(self.server, served)
        self.token = uuid.uuid4().hex[:8]  # adapter names of this run: runs may share a server
        root = cfg.sync_dir or tempfile.gettempdir()
        self.sync_dir = os.path.join(os.path.abspath(root), f"grpo-adapters-{self.token}")
        os.makedirs(self.sync_dir, exist_ok=True)
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.sync_dir, True)
        self.synced: tuple | None = None
        self.syncs = 0
        self.adapter: str | None = None  # the name the server serves the policy under

    def describe(self, model: torch.nn.Module | None = None) -> str:
        return (
            f"vllm_server at {self.server.url} serving {self.model_entry.get('root') or self.served}; the LoRA "
            f"adapter loaded through /v1/load_lora_adapter from {self.sync_dir} before each rollout when it changed"
        )

    def sync(self, model: torch.nn.Module) -> bool:
        version = vw.fingerprint(model)
        if version == self.synced:
            return False
        self.syncs += 1
        name = f"grpo-{self.token}-{self.syncs}"
        path = vw.save_adapter(model, os.path.join(self.sync_dir, name))
        self.server.call("/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
        old, self.adapter, self.synced = self.adapter, name, version
        if old is not None:
            self.server.call("/v1/unload_lora_adapter", {"lora_name": old})
            shutil.rmtree(os.path.join(self.sync_dir, old), ignore_errors=True)
        return True

    def request(self, prompt_ids: list[int], params: SamplingParams, seed: int | None) -> dict:
        greedy = params.greedy or params.temperature == 0
        payload = {
            "model": self.adapter,
            "prompt": prompt_ids,
            "max_tokens": params.max_new_tokens,
            "min_tokens": min(self.min_new_tokens, params.max_new_tokens),
            "temperature": 0.0 if greedy else params.temperature,
            "top_p": 1.0 if greedy else params.top_p,
            "top_k": 0 if greedy else params.top_k,
            "stop_token_ids": [self.tokenizer.eos_token_id],
            "logprobs": 0,
            "return_token_ids": True,  # the sampled ids ...
            "return_tokens_as_token_ids": True,  # ... and no text: the server may have no tokenizer
            "skip_special_tokens": False,
        }
        if seed is not None:
            payload["seed"] = seed
        return self.server.call("/v1/completions", payload)["choices"][0]

    @torch.no_grad()
    def generate(self, model: torch.nn.Module, prompts: Sequence[str], params: SamplingParams) -> Rollout:
        device = next(model.parameters()).device
        prompt_ids, prompt_mask = self.encode_prompts(prompts, device)
        seeds = request_seeds(len(prompts), params.greedy or params.temperature == 0)
        self.sync(model)
        ids = self.token_ids(prompts)
        with ThreadPoolExecutor(max_workers=min(len(prompts), MAX_PARALLEL_REQUESTS)) as pool:
            choices = list(pool.map(lambda i: self.request(ids[i], params, seeds[i]), range(len(prompts))))
        rows = []
        for choice in choices:
            tokens = list(choice.get("token_ids") or [])
            logprobs = (choice.get("logprobs") or {}).get("token_logprobs") or []
            rows.append((tokens, [float(x) for x in logprobs[: len(tokens)]]))
        return completions_to_rollout(self, prompt_ids, prompt_mask, rows)
