"""vLLM in tests: skip where it is absent (the main environment), fail where it must run
(`.ci/vllm` sets GRPO_REQUIRE_VLLM=1 in .venv-vllm: a skip there would hide a broken install);
a tiny model whose head size vLLM's CPU attention accepts; a real OpenAI-compatible server, with
the project's character tokenizer and a plain chat template when chat completions are asked of it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

# In-process engine, a small KV cache, threads not pinned (what .ci/vllm exports too).
ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "VLLM_LOGGING_LEVEL": "WARNING",
}
TINY_VLLM = ["model=tiny_vllm", "model.init_seed=0"]  # conf/model/tiny_vllm.yaml: head size 32


def require_vllm():
    """The vllm module, or skip the calling module (fail instead under GRPO_REQUIRE_VLLM=1)."""
    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    try:
        import vllm
    except ImportError as exc:
        if os.environ.get("GRPO_REQUIRE_VLLM") == "1":
            pytest.fail(f"vLLM tests must run here (GRPO_REQUIRE_VLLM=1) but vllm does not import: {exc}")
        pytest.skip(
            "vLLM is not installed here: `bash .ci/vllm` runs these tests in .venv-vllm", allow_module_level=True
        )
    return vllm


def tiny_vllm(lora: bool = False, dropout: float = 0.0):
    """(model, tokenizer): `model=tiny_vllm` with init seed 0, optionally with a LoRA adapter."""
    import torch

    from grpo.config.schema import LoraConfig, ModelConfig, TinyArchConfig
    from grpo.models.load import load_model
    from grpo.models.lora import apply_lora

    model, tok = load_model(
        ModelConfig(name="tiny_vllm", tiny=TinyArchConfig(num_heads=2, num_kv_heads=1)), init_seed=0
    )
    if lora:
        torch.manual_seed(0)  # peft draws A's init from the global generator: the same adapter every time
        model = apply_lora(model, LoraConfig(rank=8, alpha=16, dropout=dropout))
    return model, tok


CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"  # each message's text, then a newline


def save_chat_tokenizer(tokenizer, path: str) -> str:
    """`tokenizer` with CHAT_TEMPLATE, saved alone in `path` for the server's --tokenizer. Not in the
    weights' folder: beside a config.json naming qwen2, AutoTokenizer builds Qwen2's tokenizer from
    these files instead (it drops spaces and newlines). Returns `path`."""
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` on 127.0.0.1 with runtime LoRA loading; token
    ids only (--skip-tokenizer-init), or also text and chat with `tokenizer` (a folder, --tokenizer)."""

    def __init__(self, model_dir: str, log: Path, port: int | None = None, tokenizer: str | None = None):
        self.model_dir, self.log, self.port = model_dir, log, port or free_port()
        self.tokenizer = tokenizer
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model_dir, "--host", "127.0.0.1", "--port", str(self.port),
            "--enable-lora", "--max-lora-rank", "8", "--max-loras", "1",
            "--dtype", "float32", "--enforce-eager", "--max-model-len", "64",
            "--logprobs-mode", "processed_logprobs", "--seed", "0",
            *(["--tokenizer", self.tokenizer] if self.tokenizer else ["--skip-tokenizer-init"]),
        ]  # fmt: skip

    def start(self, timeout: float = 300) -> VLLMServer:
        env = {
            **os.environ,
            **ENV,
            "VLLM_ENABLE_V1_MULTIPROCESSING": "1",  # the server's engine in its own process, as deployed
            "VLLM_LOGGING_LEVEL": "INFO",  # the access log: which adapter calls it answered
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        }
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the vLLM server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"the vLLM server was not healthy in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """End the server and the processes it started (its own session), by its id."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
