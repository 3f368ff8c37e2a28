"""Code execution reward: a completion's program run against its item's tests, pass fraction as score.

Each program runs in its own isolated child process (grpo/rewards/sandbox.py), and its tests are
judged in another that never runs the program: a test compares plain values the program answered,
never the program's own objects (README, "What the code reward guarantees"). Many run at once
through a bounded thread pool (`reward.execution_workers`); identical (program, tests) pairs are
run once and remembered (GRPO groups often repeat a completion).

The program is the completion itself, or the first fenced block (```python ... ```) when it
has one. A completion that is a bare expression is also bound to `answer` before the tests
run, so output-prediction items can test `answer`.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from grpo.rewards.sandbox import ExecResult, Limits, run_program

CACHE_SIZE = 4096
_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)

_cache: OrderedDict = OrderedDict()
_cache_lock = threading.Lock()


def extract_program(completion: str) -> str:
    """The code in a completion: its first fenced block, else the whole text."""
    match = _FENCE.search(completion)
    return match.group(1) if match else completion


def run_many(programs: Sequence[str], tests: Sequence[Sequence[str]], limits: Limits, workers: int) -> list[ExecResult]:
    """Execute programs[i] against tests[i]; at most `workers` at once; results in order."""
    keys = [(p, tuple(t), limits) for p, t in zip(programs, tests)]
    with _cache_lock:
        todo = [k for k in dict.fromkeys(keys) if k not in _cache]
    if todo:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo)))) as pool:
            results = list(pool.map(lambda k: run_program(k[0], k[1], k[2]), todo))
        with _cache_lock:
            for key, result in zip(todo, results):
                if result.status != "error":  # an internal failure is worth retrying
                    _cache[key] = result
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
        fresh = dict(zip(todo, results))
    else:
        fresh = {}
    with _cache_lock:
        return [fresh[k] if k in fresh else _cache[k] for k in keys]


def execute(
    completions: Sequence[str],
    tests: Sequence[Sequence[str] | None],
    *,
    execution_timeout: float = 10.0,
    execution_memory_mb: int = 512,
    execution_workers: int = 2,
) -> list[ExecResult | None]:
    """Run every completion that has tests; None for rows without tests."""
    rows = [i for i, t in enumerate(tests) if t]
    limits = Limits(timeout=float(execution_timeout), memory_mb=int(execution_memory_mb))
    results = run_many(
        [extract_program(completions[i]) for i in rows], [list(tests[i]) for i in rows], limits, execution_workers
    )
    out: list[ExecResult | None] = [None] * len(completions)
    for i, result in zip(rows, results):
        out[i] = result
    return out


def code_exec(
    prompts,
    completions,
    *,
    tests,
    execution_timeout: float = 10.0,
    execution_memory_mb: int = 512,
    execution_workers: int = 2,
    **_,
) -> list[float]:
    """Share of the item's tests the completion's program passes; 0 for items without tests."""
    results = execute(
        completions,
        tests,
        execution_timeout=execution_timeout,
        execution_memory_mb=execution_memory_mb,
        execution_workers=execution_workers,
    )
    return [r.pass_fraction if r is not None else 0.0 for r in results]
