"""rollout.engine=vllm_server: GRPO through vLLM's OpenAI-compatible server on 127.0.0.1.

The test saves tiny_vllm's base weights (init seed 0) to a folder, starts
`python -m vllm.entrypoints.openai.api_server` on it with runtime LoRA loading, runs 5 GRPO steps
(`python -m grpo.run`) whose adapter reaches the server before every rollout, checks what the
server reports, and stops it. Runs in .venv-vllm (`bash .ci/vllm`).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.vllm_setup import ENV, TINY_VLLM, VLLMServer, require_vllm, tiny_vllm

pytestmark = pytest.mark.vllm
require_vllm()

STEPS = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from grpo.rollout.vllm_weights import export_base

    root = tmp_path_factory.mktemp("server")
    model, _ = tiny_vllm()
    served = VLLMServer(export_base(model, str(root / "base")), root / "server.log").start()
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
