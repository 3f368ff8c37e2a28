"""`python -m grpo.run +experiment=aflow_tiny` against a real OpenAI-compatible server on 127.0.0.1
(tests/helpers/openai_server.py): 10 steps (6 RCE on the shipped candidate workflows, 4 GRPO) whose
rewards come from executed workflows, then the same run replayed from its executor cache with the
server stopped."""

import json
import math
import subprocess
import sys
from pathlib import Path

from tests.helpers.openai_server import OpenAIServer
from tests.helpers.subprocess_env import child_env

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["schedule.rce_steps=6", "trainer.max_steps=4", "eval.num_samples=4"]  # 10 steps in all


def run(tmp_path: Path, name: str, *overrides: str) -> list[dict]:
    out = tmp_path / name
    cmd = [
        sys.executable,
        "-m",
        "grpo.run",
        "+experiment=aflow_tiny",
        *STEPS,
        "logger=none",
        "trainer.threads=1",
        f"hydra.run.dir={out}",
        *overrides,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def rewards(rows: list[dict]) -> list[tuple[int, str, float]]:
    """Every reward metric of every step, and what the workflows did (the aflow counters)."""
    keep = ("rce/reward", "train/reward", "val/", "reward/aflow_")
    return [(r["step"], k, v) for r in rows for k, v in sorted(r.items()) if k.startswith(keep)]


def test_ten_steps_scored_by_executed_workflows_and_replayed_from_the_cache(tmp_path):
    with OpenAIServer() as server:
        rows = run(tmp_path, "live", f"reward.executor.base_url={server.url}")
        requests = server.requests
        url = server.url
    assert requests > 0  # the workflows' operators reached the executor

    rce = [r for r in rows if "rce/reward" in r]
    grpo = [r for r in rows if "train/reward" in r]
    assert len(rce) == 6 and len(grpo) == 4
    for r in rce:
        # each prompt's 6 shipped workflows: 3 valid operator-calling ones answer right (correctness 1,
        # code quality 1) and 3 the validator refuses score 0 (no operator, a syntax error, Test on math)
        assert r["rce/reward/correctness"] == 0.5 and r["rce/reward/code_quality"] == 0.5
        assert r["reward/aflow_runs/ok"] == 12
        assert r["reward/aflow_invalid/no_operator"] == r["reward/aflow_invalid/syntax"] == 4
        assert r["reward/aflow_invalid/constraint_test_domain"] == 4
    assert sum(r["reward/executor_calls"] for r in rows if "reward/executor_calls" in r) == requests
    assert all(math.isfinite(r["train/reward"]) for r in grpo)
    cache = tmp_path / "live" / "executor_cache.sqlite"
    assert cache.is_file()

    # the server is gone (its port closed): every operator call is answered from the run's cache
    replay = run(
        tmp_path,
        "replay",
        f"reward.executor.base_url={url}",
        "reward.executor.cache=read_only",
        f"reward.executor.cache_path={cache}",
    )
    assert rewards(replay) == rewards(rows)
    assert sum(r.get("reward/executor_calls", 0) for r in replay) == 0
    assert sum(r.get("reward/executor_failures", 0) for r in replay) == 0
