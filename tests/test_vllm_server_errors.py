"""Bad input around the vLLM engines ends in one line (no vLLM needed: the main environment runs these).

An unreachable server fails after bounded retries naming the URL; a server serving another model
is refused; a server that dies mid-run stops the run in one line; asking for the in-process
engine without vLLM installed names the install command; keys that cannot work are refused
before anything starts. The server here is a stand-in speaking the few OpenAI/vLLM routes used.
"""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from grpo.config.errors import ConfigError
from grpo.config.schema import LoraConfig, ModelConfig, RolloutConfig
from grpo.models.load import load_model
from grpo.models.lora import apply_lora
from grpo.rollout.engine import SamplingParams
from grpo.rollout.vllm_server import VLLMServerEngine
from tests.helpers.vllm_setup import free_port


class FakeServer:
    """Serves `model` on 127.0.0.1: /v1/models, adapter loading, and completions of one token."""

    def __init__(self, model: str, answers_digits: bool = False):
        calls = self.calls = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, body):
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                calls.append(self.path)
                self.reply({"data": [{"id": model, "root": model, "parent": None}]})

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                calls.append((self.path, payload))
                if self.path == "/v1/completions":  # one digit (its id 3 + seed % 3: "0", "1" or "2") and EOS
                    digit = 3 + (payload.get("seed") or 0) % 3 if answers_digits else 20
                    choice = {"token_ids": [digit, 1], "logprobs": {"token_logprobs": [-0.5, -0.1]}}
                    self.reply({"choices": [choice]})
                else:
                    self.reply("Success")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def policy():
    model, tok = load_model(ModelConfig(), init_seed=0)
    return apply_lora(model, LoraConfig(rank=4, alpha=8, dropout=0.0)), tok


def engine(url: str, served: str, tmp_path, retries: int = 2) -> VLLMServerEngine:
    model, tok = policy()
    cfg = RolloutConfig(
        engine="vllm_server", server_url=url, server_retries=retries, server_timeout=5, sync_dir=str(tmp_path)
    )
    return VLLMServerEngine(tok, model, cfg, served=served), model


def test_unreachable_server_fails_after_bounded_retries_naming_the_url(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError) as err:
        engine(url, "/models/m", tmp_path)
    assert str(err.value).startswith(f"rollout.server_url='{url}': no vLLM server answered /v1/models after 2")


def test_a_server_serving_another_model_is_refused(tmp_path):
    server = FakeServer("/models/other")
    try:
        with pytest.raises(ConfigError, match=r"serves /models/other, not the run's model: start it with --model /m"):
            engine(server.url, "/m", tmp_path)
    finally:
        server.stop()


def test_the_adapter_is_pushed_when_it_changed_and_a_dead_server_stops_the_run(tmp_path):
    server = FakeServer("/m")
    eng, model = engine(server.url, "/m", tmp_path)
    params = SamplingParams(max_new_tokens=4, temperature=1.0)
    rollout = eng.generate(model, ["cmp 1 2 =", "cmp 1 2 ="], params)
    assert rollout.completion_mask.tolist() == [[1, 1], [1, 1]] and not rollout.truncated.any()
    assert torch.allclose(rollout.logprobs, torch.tensor([[-0.5, -0.1], [-0.5, -0.1]]))
    eng.generate(model, ["cmp 1 2 ="], params)  # weights unchanged: no new adapter
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B" in n).add_(0.1)
    eng.generate(model, ["cmp 1 2 ="], params)
    posts = [c for c in server.calls if isinstance(c, tuple)]
    loads = [p["lora_name"] for path, p in posts if path == "/v1/load_lora_adapter"]
    unloads = [p["lora_name"] for path, p in posts if path == "/v1/unload_lora_adapter"]
    assert len(loads) == 2 and unloads == loads[:1]
    completions = [p for path, p in posts if path == "/v1/completions"]
    assert completions[-1]["model"] == loads[-1] and completions[0]["seed"] != completions[1]["seed"]
    server.stop()
    with pytest.raises(ConfigError, match=f"rollout.server_url='{server.url}': no vLLM server answered"):
        eng.generate(model, ["cmp 1 2 ="], params)


def grpo_run(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grpo.run", "+preset=minimal", "logger=none", *overrides],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
    )


def test_unreachable_server_is_one_line_from_the_command_line(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    proc = grpo_run(
        "rollout.engine=vllm_server",
        f"rollout.server_url={url}",
        "rollout.server_model=/m",
        "rollout.server_retries=2",
        f"hydra.run.dir={tmp_path}",
    )
    assert proc.returncode != 0
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    assert errors == [errors[0]] and url in errors[0] and "after 2 attempts" in errors[0]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_vllm_missing_names_the_install_command(tmp_path):
    try:
        import vllm  # noqa: F401

        pytest.skip("vLLM is installed here")
    except ImportError:
        pass
    proc = grpo_run("rollout.engine=vllm", "model=tiny_vllm", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert "error: rollout.engine='vllm': vLLM is not installed in this environment: pip install -e '.[vllm]'" in (
        proc.stdout + proc.stderr
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["rollout.engine=sglang"], "rollout.engine='sglang': must be one of merged, hf, vllm, vllm_server"),
        (["rollout.is_correction=clip"], "must be one of none, truncate, mask"),
        (["rollout.is_cap=0"], "rollout.is_cap=0.0: must be > 0"),
        (["rollout.engine=vllm_server", "lora=none"], "full fine-tuning (lora=none) needs rollout.engine=vllm"),
        (["rollout.engine=vllm_server"], "rollout.server_model=None: the server needs the run's weights on disk"),
    ],
)
def test_rollout_keys_that_cannot_work_are_refused_before_the_run(overrides, message):
    proc = grpo_run(*overrides)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stdout + proc.stderr


def metrics_of(out) -> dict:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return next(json.loads(line) for line in lines if "train/reward" in json.loads(line))


def test_importance_correction_reweights_the_loss_by_the_samplers_logprobs(tmp_path):
    """The stand-in reports log-probs far above the random model's (-0.5 against ~-4.6): the
    mismatch is logged, and `truncate` scales each token's surrogate by exp(trainer - sampler)."""
    server = FakeServer("/m", answers_digits=True)
    try:
        grad_norms = {}  # the step's gradient norm per correction
        for mode in ("none", "truncate"):
            out = tmp_path / mode
            proc = grpo_run(
                "task=numgame",
                "schedule.rce_epochs=0",
                "trainer.max_steps=1",
                "algorithm.kl_beta=0",
                "rollout.engine=vllm_server",
                f"rollout.server_url={server.url}",
                "rollout.server_model=/m",
                f"rollout.is_correction={mode}",
                "logger.log_every=1",
                "eval.num_samples=4",
                f"hydra.run.dir={out}",
            )
            assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
            m = metrics_of(out)
            assert m["rollout/logprob_diff_mean"] > 1.0 and m["train/reward_std"] > 0
            grad_norms[mode] = m["train/grad_norm"]
        assert "mismatch corrected: truncate at 2" in proc.stdout + proc.stderr
        # the same samples and advantages; weights ~ exp(-4) shrink the surrogate's gradient
        assert 0 < grad_norms["truncate"] < 0.2 * grad_norms["none"]
    finally:
        server.stop()
