"""The executor client against a real OpenAI-compatible server (tests/helpers/openai_server.py):
retries, timeouts, failures that never raise, the reply cache and its replay, bounded concurrency."""

import logging
import threading
import time

import pytest

from grpo.config.errors import ConfigError
from grpo.config.schema import ExecutorConfig
from grpo.rewards import executor as executor_module
from grpo.rewards.executor import ExecutorClient, backoff
from tests.helpers.openai_server import OpenAIServer, arithmetic, judge

SECRET = "sk-test-never-stored-0123456789"


@pytest.fixture
def server():
    with OpenAIServer() as s:
        yield s


@pytest.fixture
def quick_backoff(monkeypatch):
    monkeypatch.setattr(executor_module, "BACKOFF_BASE", 0.02)


def client(url, tmp_path=None, **kw) -> ExecutorClient:
    cfg = ExecutorConfig(model="test-executor", base_url=url, timeout=kw.pop("timeout", 5.0), **kw)
    return ExecutorClient(cfg, str(tmp_path / "cache.sqlite") if tmp_path is not None else None)


def test_the_test_server_is_deterministic():
    assert arithmetic("what is 12 + 7 * 3?") == "33"
    assert arithmetic("first 1 + 1, then (2 + 4) / 4") == "1.5"
    assert arithmetic("cmp 3 4 =") is None
    graded = "Problem:\nx\nReference answer: 2\nResponse:\n{}\nRate the response from 0 to 10."
    assert [judge(graded.format(r)) for r in ("2", "it is 2.", "abc")] == ["Score: 10", "Score: 5", "Score: 3"]


def test_backoff_doubles_from_half_a_second_and_is_capped():
    assert [backoff(i) for i in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_429_then_500_then_a_timeout_then_success(server, quick_backoff):
    server.script(["429", "500", "sleep:10", "ok"])
    c = client(server.url, timeout=0.5, max_retries=3, cache="off")
    start = time.monotonic()
    reply = c.complete("what is 12 + 7 * 3?")
    elapsed = time.monotonic() - start
    assert reply.ok and reply.text == "33" and not reply.cached
    assert (reply.prompt_tokens, reply.completion_tokens) == (7, 1)  # words of the prompt, of "33"
    assert server.requests == 4
    assert elapsed < 5  # one 0.5 s timeout and three short backoffs, not the server's 10 s sleep
    stats = c.drain_stats()
    assert (stats.calls, stats.retries, stats.failures, stats.tokens) == (1, 3, 0, 8)
    assert c.drain_stats().retries == 0  # drained


def test_every_attempt_failing_is_an_error_reply_counted_and_logged_once(server, quick_backoff, caplog):
    server.script([], then="500")
    c = client(server.url, max_retries=2, cache="off")
    with caplog.at_level(logging.WARNING, logger="grpo.rewards.executor"):
        replies = c.complete_many(["1 + 1", "2 + 2"])
    assert [r.ok for r in replies] == [False, False] and all(r.text == "" for r in replies)
    assert "after 3 attempts" in replies[0].error and "500" in replies[0].error
    assert server.requests == 6
    stats = c.drain_stats()
    assert (stats.calls, stats.failures, stats.retries) == (2, 2, 4)
    assert len([r for r in caplog.records if "executor request failed" in r.getMessage()]) == 1


def test_an_unreachable_server_fails_fast_without_raising(quick_backoff, caplog):
    with OpenAIServer() as s:
        url = s.url
    c = client(url, max_retries=1, cache="off")
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="grpo.rewards.executor"):
        first, second = c.complete("1 + 1"), c.complete("2 + 2")
    assert time.monotonic() - start < 5
    assert "APIConnectionError" in first.error and not second.ok
    warnings = [r.getMessage() for r in caplog.records if "executor request failed" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0] and url.rstrip("/") in warnings[0]
    assert c.drain_stats().failures == 2


def test_a_dropped_connection_is_retried(server, quick_backoff):
    server.script(["reset", "ok"])
    reply = client(server.url, max_retries=1, cache="off").complete("3 * 3")
    assert reply.text == "9" and server.requests == 2


def test_a_client_error_is_not_retried(server, quick_backoff):
    server.script(["400"])
    reply = client(server.url, max_retries=3, cache="off").complete("3 * 3")
    assert not reply.ok and "400" in reply.error and server.requests == 1


def test_cache_replays_without_the_server_and_never_stores_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("EXECUTOR_TEST_KEY", SECRET)
    prompts = ["what is 2 + 3?", "and 7 * 6?", "what is 2 + 3?", "no arithmetic here"]
    with OpenAIServer() as s:
        writer = client(s.url, tmp_path, cache="read_write", api_key_env="EXECUTOR_TEST_KEY")
        first = writer.complete_many(prompts, system="You compute.")
        assert [r.text for r in first] == ["5", "42", "5", "42"]
        assert s.requests == 3  # the repeated request was sent once
        stats = writer.drain_stats()
        assert (stats.calls, stats.cache_hits, stats.requests) == (3, 1, 4)
        assert set(s.authorizations) == {f"Bearer {SECRET}"}  # the key was used ...
        writer.close()
        url = s.url
    assert SECRET.encode() not in (tmp_path / "cache.sqlite").read_bytes()  # ... and never stored
    monkeypatch.setenv("EXECUTOR_TEST_KEY", "another-key")  # the key is no part of the cache key
    reader = client(url, tmp_path, cache="read_only", api_key_env="EXECUTOR_TEST_KEY")
    again = reader.complete_many(prompts, system="You compute.")
    assert [(r.text, r.prompt_tokens, r.completion_tokens) for r in again] == [
        (r.text, r.prompt_tokens, r.completion_tokens) for r in first
    ]
    assert all(r.cached for r in again)
    stats = reader.drain_stats()
    assert (stats.calls, stats.cache_hits, stats.tokens) == (0, 4, 0)
    assert stats.metrics()["reward/executor_cache_hit_rate"] == 1.0

    miss = reader.complete("what is 1 + 1?")  # never asked: a read-only cache cannot answer it
    assert not miss.ok and str(tmp_path / "cache.sqlite") in miss.error
    assert "reward.executor.cache=read_write" in miss.error
    assert reader.drain_stats().failures == 1


def test_cost_is_the_billed_tokens_at_the_list_price_and_a_cache_hit_costs_nothing(tmp_path, server):
    # $1 per million prompt tokens and $3 per million completion tokens
    priced = client(server.url, tmp_path, price_per_million_input_tokens=1.0, price_per_million_output_tokens=3.0)
    replies = priced.complete_many(["what is 2 + 3?", "what is 2 + 3?", "and 7 * 6?"])
    billed = replies[0], replies[2]  # the repeated request was answered once
    stats = priced.drain_stats()
    assert stats.prompt_tokens == sum(r.prompt_tokens for r in billed) > 0
    assert stats.completion_tokens == sum(r.completion_tokens for r in billed) > 0
    expected = (stats.prompt_tokens * 1.0 + stats.completion_tokens * 3.0) / 1e6
    assert stats.metrics()["reward/executor_cost_usd"] == pytest.approx(expected)
    assert priced.complete("what is 2 + 3?").cached and priced.drain_stats().cost_usd == 0.0
    unpriced = client(server.url, cache="off")
    unpriced.complete("what is 2 + 3?")
    assert "reward/executor_cost_usd" not in unpriced.drain_stats().metrics()  # no price: no made-up cost


def test_read_only_without_a_cache_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cache=read_only needs an existing cache file"):
        client("http://127.0.0.1:9/v1", tmp_path, cache="read_only")


def test_concurrency_is_bounded(tmp_path):
    with OpenAIServer(delay=0.2) as s:
        c = client(s.url, cache="off", max_concurrency=3)
        replies = c.complete_many([f"{i} + 1" for i in range(9)])
        assert [r.text for r in replies] == [str(i + 1) for i in range(9)]
        assert s.max_in_flight == 3
        s.max_in_flight = 0
        # callers on their own threads share the same bound
        threads = [threading.Thread(target=c.complete, args=(f"{i} * 2",)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert s.max_in_flight == 3 and s.requests == 17


def test_the_test_server_runs_from_a_shell_and_names_a_taken_port():
    import subprocess
    import sys
    from pathlib import Path

    import openai

    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "tests.helpers.openai_server", "--port", "0"]
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving http://127.0.0.1:") and line.rstrip().endswith("Ctrl-C stops it"), line
        url = line.split()[1]
        reply = openai.OpenAI(base_url=url, api_key="EMPTY").chat.completions.create(
            model="test-executor", messages=[{"role": "user", "content": "what is 12 + 7 * 3?"}]
        )
        assert reply.choices[0].message.content == "33"
        port = url.split(":")[2].split("/")[0]
        taken = subprocess.run([*cmd[:-1], port], cwd=repo, capture_output=True, text=True, timeout=60)
        assert taken.returncode == 1 and taken.stderr.strip() == (
            f"error: cannot serve on 127.0.0.1:{port}: Address already in use (pick another --port)"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
