"""reward=llm_judge: the executor LLM grades completions, against a real OpenAI-compatible server
(tests/helpers/openai_server.py); short real training runs log its use, replay it from the cache
without the server, and go on when every request fails."""

import subprocess
import sys
from pathlib import Path

import pytest

from grpo.compose import compose
from grpo.config.errors import explain
from grpo.config.schema import ExecutorConfig, JudgeConfig
from grpo.rewards.executor import ExecutorClient
from grpo.rewards.llm_judge import judge_prompt, llm_judge, parse_score
from tests.helpers.openai_server import OpenAIServer
from tests.helpers.run_metrics import histories
from tests.helpers.subprocess_env import child_env


def test_scores_are_parsed_on_the_scale():
    j = JudgeConfig()
    assert parse_score(j, "Fair.\nScore: 7") == 0.7
    assert parse_score(j, "score: 3 at first, then SCORE: 9.5") == 0.95  # the last one counts
    assert parse_score(j, "Score: 12") == 1.0 and parse_score(j, "Score: -1") == 0.0  # clipped
    assert parse_score(j, "no verdict") is None
    assert parse_score(JudgeConfig(scale=5, pattern=r"(\d)/5"), "4/5") == 0.8
    prompt = judge_prompt(j, "cmp 1 2 =", "0", None)
    assert "Reference answer: (none)" in prompt and "from 0 to 10:" in prompt and "Response:\n0\n" in prompt


def test_judge_against_the_server():
    with OpenAIServer() as server:
        executor = ExecutorClient(ExecutorConfig(model="judge", base_url=server.url, cache="off"))
        scores = llm_judge(["p"] * 3, ["2", "so 2.", "abc"], answer=["2"] * 3, executor=executor, judge=JudgeConfig())
        assert scores == [1.0, 0.5, 0.3]
        no_score = JudgeConfig(template="Is {completion} right for {prompt}?")  # the server answers "42"
        assert llm_judge(["p"], ["c"], answer=["2"], executor=executor, judge=no_score) == [0.0]
        server.script(["400"])  # a failed request scores 0, counted as a failure, not as unparsed
        assert llm_judge(["p"], ["2"], answer=["2"], executor=executor, judge=JudgeConfig()) == [0.0]
        metrics = executor.drain_stats().metrics()
    assert metrics["reward/judge_unparsed"] == 1 and metrics["reward/executor_failures"] == 1
    assert metrics["reward/executor_calls"] == 5


@pytest.mark.parametrize(
    "override,key,rule",
    [
        ("reward.executor.cache=sometimes", "reward.executor.cache", "off, read_write, read_only"),
        ("reward.executor.timeout=0", "reward.executor.timeout", "> 0"),
        ("reward.executor.max_tokens=0", "reward.executor.max_tokens", "> 0"),
        ("reward.executor.max_concurrency=0", "reward.executor.max_concurrency", "> 0"),
        ("reward.executor.max_retries=-1", "reward.executor.max_retries", ">= 0"),
        ("reward.executor.temperature=-0.5", "reward.executor.temperature", ">= 0"),
        (
            "reward.executor.price_per_million_output_tokens=-1",
            "reward.executor.price_per_million_output_tokens",
            ">= 0",
        ),
        ("reward.executor.api_key_env=sk-abc", "reward.executor.api_key_env", "environment variable"),
        ("reward.executor.cache=read_only", "reward.executor.cache_path", "no such file"),
        ("reward.judge.scale=0", "reward.judge.scale", "> 0"),
        ("reward.judge.pattern=Score", "reward.judge.pattern", "group"),
        ("reward.judge.template='grade it'", "reward.judge.template", "{completion}"),
        ("reward.judge.template='{foo} {completion}'", "reward.judge.template", "may use only {prompt}"),
    ],
)
def test_bad_executor_and_judge_keys_are_one_line(override, key, rule, tmp_path):
    extra = [f"reward.executor.cache_path={tmp_path}/missing.sqlite"] if "read_only" in override else []
    with pytest.raises(Exception) as info:
        compose(["reward=llm_judge", override, *extra])
    line = explain(info.value)
    assert "\n" not in line and key in line and rule in line, line


RUN = [
    "task=numgame",
    "reward=llm_judge",
    "schedule.rce_steps=2",
    "trainer.max_steps=4",
    "logger.log_every=1",
    "eval.eval_every=100",
    "eval.num_samples=4",
    "rollout.batch_size=2",
    "rollout.group_size=4",
    "generation.max_new_tokens=4",
    "trainer.threads=1",
    "trainer.save_every=100",
    "reward.executor.model=test-judge",
]


def train(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "grpo.run",
            *RUN,
            *extra,
            f"logger.tracking_uri=sqlite:///{out}/mlflow.db",
            f"hydra.run.dir={out}/run",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        env=child_env(),
    )


def values(metrics: dict, key: str) -> list[float]:
    return [v for _, v in metrics[key]]


@pytest.mark.slow
def test_judge_run_logs_its_calls_and_replays_from_the_cache_without_the_server(tmp_path):
    with OpenAIServer() as server:
        first = train(
            tmp_path / "first",
            f"reward.executor.base_url={server.url}",
            "reward.executor.price_per_million_input_tokens=1e6",  # $1 a token, so the cost counts tokens
            "reward.executor.price_per_million_output_tokens=1e6",
        )
        assert first.returncode == 0, first.stdout[-3000:]
        url, asked = server.url, server.requests
    assert asked > 0
    judged = histories(tmp_path / "first")
    assert sum(values(judged, "reward/executor_calls")) > 0
    running = lambda key: [sum(values(judged, key)[: i + 1]) for i in range(len(judged[key]))]  # noqa: E731
    assert values(judged, "reward/executor_calls_total") == running("reward/executor_calls")
    assert values(judged, "reward/executor_tokens_total") == running("reward/executor_tokens")
    assert values(judged, "reward/executor_cost_usd") == values(judged, "reward/executor_tokens")
    assert values(judged, "reward/executor_cost_usd_total") == running("reward/executor_tokens")
    calls, tokens = running("reward/executor_calls")[-1], running("reward/executor_tokens")[-1]
    assert f"executor   {calls:,.0f} calls, {tokens:,.0f} tokens, ${tokens:.4f} (cache hits are free)" in first.stdout
    assert "reward/judge_unparsed" not in judged  # every reply held a score
    assert all(0.0 <= v <= 1.0 for v in values(judged, "train/reward/llm_judge"))
    cache = tmp_path / "first" / "run" / "executor_cache.sqlite"
    assert cache.exists()

    replay = train(
        tmp_path / "replay",
        f"reward.executor.base_url={url}",  # nothing listens there any more
        "reward.executor.cache=read_only",
        f"reward.executor.cache_path={cache}",
    )
    assert replay.returncode == 0, replay.stdout[-3000:]
    replayed = histories(tmp_path / "replay")
    for key in ("train/reward", "train/reward/llm_judge", "rce/reward"):
        assert values(replayed, key) == values(judged, key), key
    assert sum(values(replayed, "reward/executor_calls")) == 0
    assert sum(values(replayed, "reward/executor_failures")) == 0
    assert values(replayed, "reward/executor_cache_hit_rate")[-1] == 1.0


@pytest.mark.slow
def test_a_server_failing_every_request_does_not_stop_training(tmp_path):
    with OpenAIServer() as server:
        server.script([], then="500")
        proc = train(
            tmp_path,
            f"reward.executor.base_url={server.url}",
            "reward.executor.max_retries=1",
            "reward.executor.cache=off",
        )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert proc.stdout.count("executor request failed after 2 attempts") == 1  # logged once, then counted
    metrics = histories(tmp_path)
    assert all(v > 0 for v in values(metrics, "reward/executor_failures"))
    assert all(v > 0 for v in values(metrics, "reward/executor_retries"))
    assert values(metrics, "train/reward/llm_judge") == [0.0] * len(metrics["train/reward/llm_judge"])
