"""vLLM's OpenAI-compatible server on 127.0.0.1, one per module: rollout.engine=vllm_server and the
executor LLM (reward.executor, reward=llm_judge) against it.

The module saves tiny_vllm's base weights (init seed 0) to a folder and its character tokenizer,
with a plain chat template, to another, and starts `python -m vllm.entrypoints.openai.api_server`
on them with runtime LoRA loading. One test runs 5 GRPO steps (`python -m grpo.run`) whose adapter
reaches the server before every rollout (the engine sends and reads token ids only), one points
the executor client at the server's chat completions, and the server is stopped. Runs in
.venv-vllm (`bash .ci/vllm`).
"""

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.vllm_setup import ENV, TINY_VLLM, VLLMServer, require_vllm, save_chat_tokenizer, tiny_vllm

pytestmark = pytest.mark.vllm
require_vllm()

STEPS = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from grpo.rollout.vllm_weights import export_base

    root = tmp_path_factory.mktemp("server")
    model, tok = tiny_vllm()
    base, tokenizer = export_base(model, str(root / "base")), save_chat_tokenizer(tok, str(root / "tokenizer"))
    served = VLLMServer(base, root / "server.log", tokenizer=tokenizer).start()
    try:
        yield served
    finally:
        served.stop()


def grpo_run(out: Path, server: VLLMServer, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "grpo.run",
            "task=numgame",
            *TINY_VLLM,
            "lora.rank=8",
            "lora.alpha=16",
            "rollout.engine=vllm_server",
            f"rollout.server_url={server.url}",
            f"rollout.server_model={server.model_dir}",
            f"rollout.sync_dir={out / 'adapters'}",
            "rollout.batch_size=4",
            "rollout.group_size=4",
            "generation.max_new_tokens=4",
            "schedule.rce_epochs=0",
            f"trainer.max_steps={STEPS}",
            "eval.num_samples=8",
            "logger=none",
            "logger.log_every=1",
            f"hydra.run.dir={out / 'run'}",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        env={**os.environ, **ENV},
    )


def test_five_grpo_steps_through_the_server_with_the_adapter_synced_each_step(server, tmp_path):
    from grpo.rollout.vllm_server import Server

    proc = grpo_run(tmp_path, server)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "engine     vllm_server: vllm_server at " + server.url in proc.stdout
    log = server.log.read_text()
    loads = re.findall(r"POST /v1/load_lora_adapter HTTP/1.1\" 200", log)
    unloads = re.findall(r"POST /v1/unload_lora_adapter HTTP/1.1\" 200", log)
    # before each of the 5 rollouts (the weights moved after every step) and the final validation
    assert len(loads) == STEPS + 1 and len(unloads) == STEPS
    models = Server(server.url, 10, 1).call("/v1/models")["data"]
    adapters = [m for m in models if m.get("parent")]
    assert len(adapters) == 1 and re.fullmatch(rf"grpo-[0-9a-f]{{8}}-{STEPS + 1}", adapters[0]["id"])
    assert adapters[0]["root"].startswith(str(tmp_path / "adapters"))  # the folder both sides read
    metrics = [line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "train/reward" in line]
    assert len(metrics) == STEPS and all("rollout/logprob_diff_max" in line for line in metrics)


def test_a_server_serving_another_model_is_refused_in_one_line(server, tmp_path):
    proc = grpo_run(tmp_path, server, "rollout.server_model=/models/Qwen2.5-0.5B")
    assert proc.returncode != 0
    assert f"error: rollout.server_model='/models/Qwen2.5-0.5B': the server at {server.url} serves" in proc.stdout
    assert "Traceback" not in proc.stdout


def test_the_executor_and_the_llm_judge_through_the_server_then_replayed_from_the_cache(server, tmp_path):
    """reward.executor at the server's chat completions (the base model): replies with their tokens
    counted, cached (read_write), then replayed (read_only) with the server up and never called;
    reward=llm_judge scores each completion (a random model's replies hold no score: counted)."""
    from grpo.compose import compose
    from grpo.rewards.executor import ExecutorClient
    from grpo.rewards.llm_judge import llm_judge

    def reward_config(cache: str):
        return compose(
            [
                "reward=llm_judge",
                f"reward.executor.base_url={server.url}/v1",
                f"reward.executor.model={server.model_dir}",
                "reward.executor.max_tokens=8",  # prompt + reply within the served 64 positions
                "reward.executor.timeout=60",
                f"reward.executor.cache={cache}",
                f"reward.executor.cache_path={tmp_path / 'executor_cache.sqlite'}",
                "reward.judge.template='{prompt} = {completion}? Score:'",
            ]
        ).cfg.reward

    def chats() -> int:  # chat requests the server answered (its access log)
        return server.log.read_text().count('"POST /v1/chat/completions HTTP/1.1" 200')

    prompts = ["1 + 1", "7 * 6", "2 ** 5", "1 + 1"]  # the repeated one is sent once
    rw = reward_config("read_write")
    client = ExecutorClient(rw.executor)
    try:
        replies = client.complete_many(prompts)
        assert all(r.ok and r.text for r in replies) and [r.cached for r in replies] == [False] * 3 + [True]
        # the character tokenizer and the chat template: each prompt's characters and one newline
        assert [r.prompt_tokens for r in replies] == [len(p) + 1 for p in prompts]
        assert all(1 <= r.completion_tokens <= 8 for r in replies)
        metrics = client.drain_stats().metrics()
        assert metrics["reward/executor_calls"] == 3
        assert metrics["reward/executor_tokens"] == sum(r.tokens for r in replies[:3])  # a cache hit costs none
        assert metrics["reward/executor_cache_hit_rate"] == 0.25
        assert metrics["reward/executor_failures"] == 0
        completions = [r.text for r in replies]
        scores = llm_judge(prompts, completions, answer=[None] * 4, executor=client, judge=rw.judge)
        assert len(scores) == 4 and all(isinstance(s, float) for s in scores)
        judged = client.drain_stats().metrics()
        assert judged["reward/executor_calls"] == 3 and judged["reward/executor_failures"] == 0
        assert judged["reward/judge_unparsed"] == 4 and scores == [0.0] * 4  # no "Score: N" in a random model's text
    finally:
        client.close()
    assert chats() == 6

    ro = reward_config("read_only")
    replay = ExecutorClient(ro.executor)
    try:
        again = replay.complete_many(prompts)
        rescored = llm_judge(prompts, [r.text for r in again], answer=[None] * 4, executor=replay, judge=ro.judge)
        stats = replay.drain_stats()
    finally:
        replay.close()
    assert [(r.text, r.prompt_tokens, r.completion_tokens) for r in again] == [
        (r.text, r.prompt_tokens, r.completion_tokens) for r in replies
    ]
    assert all(r.cached for r in again) and rescored == scores
    metrics = stats.metrics()
    assert (stats.requests, stats.calls, stats.tokens, stats.failures) == (8, 0, 0, 0)
    assert metrics["reward/executor_cache_hit_rate"] == 1.0 and metrics["reward/judge_unparsed"] == 4
    with urllib.request.urlopen(server.url + "/health", timeout=10) as r:
        assert r.status == 200  # up, and not called
    assert chats() == 6
