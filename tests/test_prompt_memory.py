"""What a run learns from its rollouts besides the weights, across processes and restarts: AFlow's
best workflows (rollout.prompt_optimizer) are checkpointed, restored, and observed from every
process's rows on every rank; the executor's metrics are summed over ranks; reaching the same
executor or vLLM server another way does not block a resume."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from grpo import checkpoint as ckpt
from grpo.tasks.aflow import INSTRUCTION, WorkflowPrompts
from tests.helpers.inprocess_run import run
from tests.helpers.openai_server import OpenAIServer
from tests.helpers.run_metrics import TOL
from tests.helpers.subprocess_env import child_env

# Wall-clock metrics, and the executor's own use: a resumed run starts with an empty reply cache in
# its own directory, so it calls the server where the uninterrupted run read its cache.
NOT_COMPARED = ("time/", "train/step_time", "train/tokens_per_s", "reward/executor_")
AFLOW = [
    "+experiment=aflow_tiny",
    "logger=none",
    "trainer.threads=1",
    "schedule.rce_steps=2",  # the shipped workflows' RCE steps fill the best-workflow memory
    "trainer.max_steps=4",
    "trainer.save_every=2",  # checkpoints at steps 2 (RCE's end), 4 and 6
    "eval.num_samples=2",
    "eval.eval_every=0",
    "eval.before_train=false",
    "rollout.candidates=file",  # GRPO groups of shipped workflows: rewards with a spread, buffered successes
    "rollout.experience_buffer.buffer_size=16",
    "seed=0",
]


def test_a_resumed_aflow_run_keeps_its_best_workflows_and_equals_the_uninterrupted_one(tmp_path):
    with OpenAIServer() as server:
        whole, metrics, samples = run(tmp_path / "whole", *AFLOW, f"reward.executor.base_url={server.url}")
    memory = whole.ctx.prompts.state_dict()
    assert memory["best"]["math"]  # RCE's shipped workflows entered it
    assert "Best workflows:\n" in samples[5][0]["prompt"]
    # the buffer is keyed by the problem, not by the prompt the policy was shown (it changes with the memory)
    problems = {ex.prompt for ex in whole.ctx.task.train}
    assert len(whole.ctx.experience) > 0 and set(whole.ctx.experience.prompts()) <= problems

    def resume_from(target: Path, keep_memory: bool):
        shutil.copytree(tmp_path / "whole" / "checkpoints" / "step_4", target / "checkpoints" / "step_4")
        if not keep_memory:  # what a checkpoint without the prompts' memory would resume into
            path = target / "checkpoints" / "step_4" / ckpt.TRAINING_FILE
            training = torch.load(path, weights_only=False)
            training.pop("prompts")
            torch.save(training, path)
        # another server (another port) and another vLLM timeout: the same servers, reached another way
        with OpenAIServer() as other:
            moved = [f"reward.executor.base_url={other.url}", "rollout.server_timeout=30"]
            recipe, resumed, rows = run(target, *AFLOW, *moved)
        assert sorted(resumed) == [5, 6]
        return recipe, resumed, rows

    recipe, resumed, rows = resume_from(tmp_path / "resumed", keep_memory=True)
    assert recipe.ctx.prompts.state_dict() == memory
    assert recipe.ctx.experience.state_dict() == whole.ctx.experience.state_dict()
    for step in (5, 6):
        assert [r["prompt"] for r in rows[step]] == [r["prompt"] for r in samples[step]]
        keys = {k for k in metrics[step] if not k.startswith(NOT_COMPARED)}
        assert keys == {k for k in resumed[step] if not k.startswith(NOT_COMPARED)}
        for k in keys:
            assert abs(metrics[step][k] - resumed[step][k]) <= TOL, (step, k)
    for what in ("calls", "tokens"):  # the executor's running totals go on from the checkpoint's (step 4)
        total, this_step = f"reward/executor_{what}_total", f"reward/executor_{what}"
        assert resumed[5][total] - resumed[5][this_step] == metrics[4][total] > 0
    _, _, forgotten = resume_from(tmp_path / "forgotten", keep_memory=False)
    assert "Best workflows:\n" not in forgotten[5][0]["prompt"]  # the test can tell


def test_every_rank_observes_every_ranks_rows_and_logs_the_executor_summed(tmp_path):
    """Two real gloo processes: both end with the memory one process builds from all rows in rank
    order, and both log the executor's use of both (counters of either rank included)."""
    from tests.helpers.rank_memory_worker import ROWS

    worker = str(Path(__file__).resolve().parent / "helpers" / "rank_memory_worker.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", worker]
    proc = subprocess.run([*command, str(tmp_path)], capture_output=True, text=True, timeout=300, env=child_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    one = WorkflowPrompts(None, num_examples=2)
    for rank in (0, 1):
        examples, completions, rewards = zip(*ROWS[rank])
        one.observe(list(examples), list(completions), list(rewards), 1)
    assert rank0["prompts"] == rank1["prompts"] == json.loads(json.dumps(one.state_dict()))
    assert rank0["prompts"]["best"]["math"] == [[0.9, "wf-b"], [0.6, "wf-a"]]  # rank 1's rows reached rank 0
    assert rank0["pending"] == rank1["pending"] == 0
    assert (
        rank0["metrics"]
        == rank1["metrics"]
        == {
            "reward/executor_calls": 3.0,
            "reward/executor_tokens": 30.0,
            "reward/executor_cache_hit_rate": 0.5,  # 3 hits of 6 requests
            "reward/executor_failures": 1.0,
            "reward/executor_retries": 0.0,
            "reward/executor_cost_usd": 0.25,
            "reward/executor_calls_total": 13.0,  # 10 before this step, 3 in it
            "reward/executor_tokens_total": 130.0,
            "reward/executor_cost_usd_total": 1.25,
            "reward/aflow_runs/ok": 2.0,
            "reward/aflow_invalid/syntax": 1.0,
        }
    )


def test_the_prompts_memory_round_trips_and_plain_prompts_learn_nothing():
    from grpo.tasks.base import Example
    from grpo.tasks.prompts import Prompts

    ex = Example("What is 7*8?", "56", "math")
    prompts = WorkflowPrompts(None, num_examples=1)
    prompts.record([ex], ["wf-a", "wf-b"], [0.4, 0.8], repeats=2)
    assert prompts.build(ex) == INSTRUCTION + "Problem: What is 7*8?\nWorkflow:\n"  # not observed yet
    prompts.observe(*zip(*prompts.take_pending()), 1)
    restored = WorkflowPrompts(None, num_examples=1)
    restored.load_state_dict(json.loads(json.dumps(prompts.state_dict())))
    assert (
        restored.build(ex)
        == prompts.build(ex)
        == INSTRUCTION + ("Best workflows:\nwf-b\nProblem: What is 7*8?\nWorkflow:\n")
    )
    plain = Prompts()
    plain.record([ex], ["x"], [1.0], repeats=1)
    assert not plain.learns and plain.pending == [] and plain.state_dict() == {}


@pytest.mark.parametrize(
    "key, saved, current",
    [
        ("reward.executor.base_url", "http://127.0.0.1:8000/v1", "http://10.0.0.2:9000/v1"),
        ("reward.executor.api_key_env", "OPENAI_API_KEY", "GATEWAY_KEY"),
        ("reward.executor.timeout", 180.0, 60.0),
        ("reward.executor.max_retries", 3, 5),
        ("reward.executor.max_concurrency", 8, 2),
        ("reward.executor.cache", "read_write", "read_only"),
        ("reward.executor.cache_path", None, "/tmp/cache.sqlite"),
        ("reward.executor.price_per_million_input_tokens", 0.15, 0.25),
        ("rollout.server_url", "http://127.0.0.1:8000", "http://127.0.0.1:8001"),
        ("rollout.server_timeout", 120.0, 30.0),
        ("rollout.server_retries", 5, 2),
    ],
)
def test_reaching_the_same_server_another_way_does_not_block_a_resume(key, saved, current):
    assert ckpt.incompatible_keys({key: saved}, {key: current}) == []


@pytest.mark.parametrize("key", ["reward.executor.model", "reward.executor.temperature", "rollout.server_model"])
def test_what_the_server_is_asked_still_blocks_a_resume(key):
    assert ckpt.incompatible_keys({key: "a"}, {key: "b"}) == [key]
