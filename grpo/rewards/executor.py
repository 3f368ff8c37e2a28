"""The executor LLM: chat completions over any OpenAI-compatible API, retried, bounded, cached.

`ExecutorClient(cfg, cache_path)` is the one way the rewards (the LLM judge, AFlow's operators)
reach a language model. Its contract, kept stable for every caller:

- `complete(messages_or_prompt, *, system=None) -> ExecutorReply`: one chat completion. A plain
  string is one user message (after `system`, when given); a list is OpenAI's messages as they
  are (`system` then goes first). Safe to call from many threads at once: at most
  `cfg.max_concurrency` requests are in flight to the server, whoever sends them.
- `complete_many(requests, *, system=None) -> list[ExecutorReply]`: the same for a batch, in
  order, sent by `cfg.max_concurrency` threads; identical requests are sent once when the cache
  is on (temperature 0 makes them one answer, the cache would return it anyway).
- Neither ever raises for a failed request: a request that still fails after `cfg.max_retries`
  retries (429, 5xx, timeouts, connection errors, with exponential backoff from 0.5 s, doubling,
  capped at 8 s; other errors are not retried) comes back as a reply with `error` set and
  `text` empty, and is counted. The first failure of each kind is logged once, as one line.
- The cache (sqlite, standard library) maps sha256 of the canonical JSON request (model,
  messages, temperature, max_tokens; never the API key, never the URL) to the reply's text and
  usage. `read_write` reads it first and stores what the server answers, `read_only` never calls
  the server (a miss is an error reply saying so), `off` bypasses it.
- `drain_stats() -> ExecutorStats`: what happened since the last drain: `calls` (requests that
  went to the server), `cache_hits`, `requests` (all of them), `prompt_tokens` and
  `completion_tokens` (what the server billed: cache hits cost none), `cost_usd` (those tokens at
  `cfg.price_per_million_input_tokens` / `_output_tokens`; None when no price is set, and then
  not logged), `failures`, `retries`, and `counts` that
  callers add with `count(name)` (the judge's unparsed scores). The stages sum every process's
  (`ExecutorStats.merged`, grpo/stages/scoring.executor_metrics) before logging.

The API key is read from the environment variable `cfg.api_key_env` ("EMPTY" when unset: local
servers take any key); it is handed to the openai client only, and masked in any error text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from grpo.config.errors import ConfigError
from grpo.config.schema import ExecutorConfig

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.5  # seconds before the first retry; doubles each retry
BACKOFF_CAP = 8.0
CACHE_MODES = ("off", "read_write", "read_only")
TRANSPORT_LOGGERS = ("httpx", "httpx2")  # the openai client's HTTP layer

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class ExecutorReply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False  # answered from the cache (its usage is the original call's)
    error: str | None = None  # set when the request failed: text is then empty

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class ExecutorStats:
    requests: int = 0
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None  # None: no price set
    failures: int = 0
    retries: int = 0
    counts: Counter = field(default_factory=Counter)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def merged(cls, parts: Sequence[ExecutorStats]) -> ExecutorStats:
        """The sum of `parts` (e.g. every process's): counts added, counters' names united."""
        out = cls()
        for part in parts:
            out.requests += part.requests
            out.calls += part.calls
            out.cache_hits += part.cache_hits
            out.prompt_tokens += part.prompt_tokens
            out.completion_tokens += part.completion_tokens
            if part.cost_usd is not None:
                out.cost_usd = (out.cost_usd or 0.0) + part.cost_usd
            out.failures += part.failures
            out.retries += part.retries
            out.counts.update(part.counts)
        return out

    def metrics(self, prefix: str = "reward/") -> dict[str, float]:
        out = {
            f"{prefix}executor_calls": float(self.calls),
            f"{prefix}executor_tokens": float(self.tokens),
            f"{prefix}executor_cache_hit_rate": self.cache_hits / self.requests if self.requests else 0.0,
            f"{prefix}executor_failures": float(self.failures),
            f"{prefix}executor_retries": float(self.retries),
        }
        if self.cost_usd is not None:
            out[f"{prefix}executor_cost_usd"] = self.cost_usd
        out.update({f"{prefix}{name}": float(n) for name, n in self.counts.items()})
        return out


def as_messages(request: str | Messages, system: str | None = None) -> Messages:
    messages = [{"role": "user", "content": request}] if isinstance(request, str) else [dict(m) for m in request]
    return ([{"role": "system", "content": system}] if system is not None else []) + messages


def backoff(retry: int) -> float:
    """Seconds to wait before retry number `retry` (0-based)."""
    return min(BACKOFF_CAP, BACKOFF_BASE * 2**retry)


class ReplyCache:
    """sqlite file of replies by request hash; one connection, serialised by a lock."""

    def __init__(self, path: str, read_only: bool):
        self.path, self.lock = path, threading.Lock()
        if read_only:
            if not os.path.exists(path):
                raise ConfigError(
                    "reward.executor.cache_path", path, "cache=read_only needs an existing cache file (no such file)"
                )
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=30)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.db = sqlite3.connect(path, check_same_thread=False, timeout=30)
            with self.lock, self.db:
                self.db.execute(
                    "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, text TEXT NOT NULL, "
                    "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL)"
                )

    def get(self, key: str) -> ExecutorReply | None:
        with self.lock:
            row = self.db.execute(
                "SELECT text, prompt_tokens, completion_tokens FROM replies WHERE key = ?", (key,)
            ).fetchone()
        return ExecutorReply(row[0], row[1], row[2], cached=True) if row else None

    def put(self, key: str, reply: ExecutorReply) -> None:
        with self.lock, self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?)",
                (key, reply.text, reply.prompt_tokens, reply.completion_tokens),
            )

    def close(self) -> None:
        with self.lock:
            self.db.close()


class ExecutorClient:
    def __init__(self, cfg: ExecutorConfig, cache_path: str | None = None):
        import openai

        for name in TRANSPORT_LOGGERS:  # one INFO line per request otherwise; a level set by the user stays
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.WARNING)
        if cfg.cache not in CACHE_MODES:
            raise ConfigError("reward.executor.cache", cfg.cache, f"must be one of {', '.join(CACHE_MODES)}")
        self.cfg, self.mode = cfg, cfg.cache
        self._key = os.environ.get(cfg.api_key_env) or "EMPTY"
        self.client = openai.OpenAI(base_url=cfg.base_url, api_key=self._key, timeout=cfg.timeout, max_retries=0)
        self.where = str(self.client.base_url)
        path = cfg.cache_path or cache_path
        if self.mode == "read_only" and not path:
            raise ConfigError(
                "reward.executor.cache", "read_only", "needs reward.executor.cache_path (no run directory here)"
            )
        if self.mode == "read_write" and not path:
            log.warning(
                "executor: no run directory here, replies are not cached (reward.executor.cache_path keeps them)"
            )
        self.cache = ReplyCache(path, self.mode == "read_only") if self.mode != "off" and path else None
        self.cache_path = path if self.cache is not None else None
        self._slots = threading.BoundedSemaphore(cfg.max_concurrency)
        self._pool = ThreadPoolExecutor(cfg.max_concurrency, thread_name_prefix="executor")
        self._lock = threading.Lock()
        self._stats = self._new_stats()
        self._logged: set[str] = set()

    # -- the contract -------------------------------------------------------------------------
    def complete(self, messages_or_prompt: str | Messages, *, system: str | None = None) -> ExecutorReply:
        """One chat completion (see the module docstring): never raises for a failed request."""
        messages = as_messages(messages_or_prompt, system)
        return self._answer(messages, self.request_key(messages))

    def complete_many(self, requests: Sequence[str | Messages], *, system: str | None = None) -> list[ExecutorReply]:
        """Replies to `requests`, in order, at most `max_concurrency` at once."""
        messages = [as_messages(r, system) for r in requests]
        keys = [self.request_key(m) for m in messages]
        if self.cache is None:
            return list(self._pool.map(self._answer, messages, keys))
        first = {k: i for i, k in reversed(list(enumerate(keys)))}  # each distinct request's first index
        order = sorted(first.values())
        replies = dict(zip(order, self._pool.map(lambda i: self._answer(messages[i], keys[i]), order)))
        out = []
        for i, k in enumerate(keys):
            if i == first[k]:
                out.append(replies[i])
                continue
            reply = replies[first[k]]
            with self._lock:
                self._stats.requests += 1
                self._stats.failures += not reply.ok
                self._stats.cache_hits += reply.ok
            out.append(reply if not reply.ok else ExecutorReply(reply.text, *usage(reply), cached=True))
        return out

    def count(self, name: str, n: int = 1) -> None:
        """Add `n` to a caller's own counter, drained with the stats (as reward/<name>)."""
        with self._lock:
            self._stats.counts[name] += n

    def drain_stats(self) -> ExecutorStats:
        with self._lock:
            stats, self._stats = self._stats, self._new_stats()
        return stats

    def _new_stats(self) -> ExecutorStats:
        priced = self.cfg.price_per_million_input_tokens > 0 or self.cfg.price_per_million_output_tokens > 0
        return ExecutorStats(cost_usd=0.0 if priced else None)

    def _bill(self, reply: ExecutorReply) -> None:
        """Add a reply the server answered (not the cache) to the tokens and the cost; holds the lock."""
        self._stats.prompt_tokens += reply.prompt_tokens
        self._stats.completion_tokens += reply.completion_tokens
        if self._stats.cost_usd is not None:
            c = self.cfg
            self._stats.cost_usd += (
                reply.prompt_tokens * c.price_per_million_input_tokens
                + reply.completion_tokens * c.price_per_million_output_tokens
            ) / 1e6

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.client.close()
        if self.cache is not None:
            self.cache.close()

    def request_key(self, messages: Messages) -> str:
        """sha256 of the canonical request: model, messages, temperature, max_tokens (no key, no URL)."""
        c = self.cfg
        body = {"model": c.model, "messages": messages, "temperature": c.temperature, "max_tokens": c.max_tokens}
        return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    # -- one request --------------------------------------------------------------------------
    def _answer(self, messages: Messages, key: str) -> ExecutorReply:
        with self._lock:
            self._stats.requests += 1
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            with self._lock:
                self._stats.cache_hits += 1
            return hit
        if self.mode == "read_only":
            return self._failed(
                "cache_miss",
                f"not in the cache {self.cache_path} (cache=read_only never calls the server; "
                "reward.executor.cache=read_write fills it)",
            )
        reply = self._call(messages)
        if reply.ok and self.cache is not None:
            self.cache.put(key, reply)
        return reply

    def _call(self, messages: Messages) -> ExecutorReply:
        import openai

        retryable = (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError)
        with self._lock:
            self._stats.calls += 1
        for attempt in range(self.cfg.max_retries + 1):
            try:
                with self._slots:
                    resp = self.client.chat.completions.create(
                        model=self.cfg.model,
                        messages=messages,
                        temperature=self.cfg.temperature,
                        max_tokens=self.cfg.max_tokens,
                    )
            except retryable as exc:
                if attempt == self.cfg.max_retries:
                    return self._failed(type(exc).__name__, self._describe(exc), attempts=attempt + 1)
                with self._lock:
                    self._stats.retries += 1
                time.sleep(backoff(attempt))
                continue
            except openai.OpenAIError as exc:  # 400, 401, 404, ...: retrying would get the same answer
                return self._failed(type(exc).__name__, self._describe(exc), attempts=attempt + 1)
            text = (resp.choices[0].message.content or "") if resp.choices else ""
            u = resp.usage
            reply = ExecutorReply(text, u.prompt_tokens if u else 0, u.completion_tokens if u else 0)
            with self._lock:
                self._bill(reply)
            return reply
        raise AssertionError("unreachable: the last attempt returns")

    def _describe(self, exc: Exception) -> str:
        status = getattr(exc, "status_code", None)
        text = " ".join(str(exc).split())[:200]
        if self._key != "EMPTY":
            text = text.replace(self._key, "***")
        return f"{type(exc).__name__}{f' {status}' if status else ''}: {text}"

    def _failed(self, kind: str, message: str, attempts: int | None = None) -> ExecutorReply:
        with self._lock:
            self._stats.failures += 1
            first = kind not in self._logged
            self._logged.add(kind)
        tries = f" after {attempts} attempt{'s' * (attempts != 1)}" if attempts else ""
        error = f"executor request failed{tries}: {message}"
        if first:
            log.warning(
                "%s (model %s at %s; scored as a failure, further failures of this kind are counted in "
                "reward/executor_failures)",
                error,
                self.cfg.model,
                self.where,
            )
        return ExecutorReply("", error=error)


def usage(reply: ExecutorReply) -> tuple[int, int]:
    return reply.prompt_tokens, reply.completion_tokens
