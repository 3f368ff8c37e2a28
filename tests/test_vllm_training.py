"""GRPO trains with rollout.engine=vllm: a 30-step number-game run (real `python -m grpo.run`
processes) gains reward as the merged engine's does, logs the sampler/trainer mismatch every
logged step, and a run killed mid-way resumes from its last checkpoint to the same numbers.

GRPO alone from the random tiny_vllm model (full fine-tuning, lr 3e-3): 30 steps take the batch
reward from ~0.05 to ~0.45 with either engine. Runs in .venv-vllm (`bash .ci/vllm`).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.vllm_setup import ENV, TINY_VLLM, require_vllm

pytestmark = pytest.mark.vllm
require_vllm()

STEPS = 30
NUMGAME = [
    "+experiment=numgame_tiny",
    # plain GRPO as measured below, whatever numgame_tiny's own GRPO stage becomes (now DAPO, decay 0.3)
    "algorithm=grpo",
    "algorithm.kl_beta=0.0",
    "trainer.optim.weight_decay=0.1",
    *TINY_VLLM,
    "schedule.rce_steps=0",
    "schedule.grpo_lr=3e-3",
    f"trainer.max_steps={STEPS}",
    "trainer.save_every=10",
    "trainer.threads=1",
    "eval.eval_every=0",
    "eval.before_train=false",
    "eval.num_samples=50",
    "logger.log_every=1",
    "logger=none",
]


def command(out: Path, engine: str) -> list[str]:
    return [sys.executable, "-m", "grpo.run", *NUMGAME, f"rollout.engine={engine}", f"hydra.run.dir={out}"]


def run(out: Path, engine: str) -> str:
    proc = subprocess.run(
        command(out, engine),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
        env={**os.environ, **ENV},
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout


def steps(out: Path) -> dict[int, dict]:
    """The GRPO metrics per step (the last record of a step wins: a resumed run logs it again)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if "train/reward" in r}


def rise(out: Path) -> tuple[float, float]:
    rewards = [r["train/reward"] for _, r in sorted(steps(out).items())]
    assert len(rewards) == STEPS
    return sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vllm")
    return out, run(out, "vllm")


def test_numgame_trains_with_vllm_as_with_merged(vllm_run, tmp_path):
    out, console = vllm_run
    assert "engine     vllm: vllm" in console and "full weights pushed in memory" in console
    first, last = rise(out)
    run(tmp_path, "merged")
    merged_first, merged_last = rise(tmp_path)
    assert last - first > 0.2, (first, last)  # measured: 0.05 -> 0.42
    assert merged_last - merged_first > 0.2, (merged_first, merged_last)
    assert abs(first - merged_first) < 0.1  # the same start; not the same numbers after it


def test_mismatch_metrics_are_logged_every_logged_step(vllm_run):
    out, _ = vllm_run
    records = steps(out)
    assert sorted(records) == list(range(1, STEPS + 1))
    for record in records.values():
        # fp32 on a CPU, temperature 1, no top-k/top-p, no dropout: the two agree to float rounding
        assert 0 <= record["rollout/logprob_diff_mean"] <= record["rollout/logprob_diff_max"] < 1e-4


def test_a_run_killed_mid_way_resumes_from_its_checkpoint_to_the_same_numbers(vllm_run, tmp_path):
    """The colocated engine dies with the trainer: the last checkpoint is intact, and a resumed run
    (engine rebuilt, weights pushed again, request seeds from the restored stream) repeats the
    uninterrupted run step for step."""
    out, _ = vllm_run
    proc = subprocess.Popen(
        command(tmp_path, "vllm"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **ENV}
    )
    try:
        deadline = time.time() + 600
        while not (tmp_path / "checkpoints" / "step_10").is_dir() and time.time() < deadline:
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (tmp_path / "checkpoints" / "step_10").is_dir()
    console = run(tmp_path, "vllm")
    assert "resuming from" in console and "step_10" in console
    want, got = steps(out), steps(tmp_path)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(11, STEPS + 1):
        for key in ("train/reward", "train/loss/policy", "rollout/logprob_diff_mean"):
            assert got[step][key] == pytest.approx(want[step][key], abs=1e-6), (step, key)


def test_grpo_eval_samples_with_the_engine_the_run_named(vllm_run):
    """`grpo.eval` on the vLLM run's checkpoint generates with vLLM (the run's rollout.engine), and
    greedy decoding gives the merged engine's answers (fp32 on a CPU: the same tokens)."""
    out, _ = vllm_run
    checkpoint = out / "checkpoints" / f"step_{STEPS}"

    def evaluate(*overrides: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "grpo.eval", "--checkpoint", str(checkpoint), "--limit", "24", *overrides],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, **ENV, "TQDM_DISABLE": "1"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    by_vllm, by_merged = evaluate(), evaluate("rollout.engine=merged")
    assert "greedy; vllm engine]" in by_vllm and "greedy; merged engine]" in by_merged
    table = lambda text: text.split("engine]", 1)[1]  # noqa: E731 - the rows after the title
    assert "accuracy" in table(by_vllm) and " 24 " in table(by_vllm)  # the rows: 24 prompts scored
    assert table(by_vllm) == table(by_merged)
