"""Runs that survive: kill and resume, crash during a save, guards, early stopping, bad input.

Every test drives a real `python -m grpo.run` process on the tiny model with a real MLflow
SQLite store. Resumed runs are compared with uninterrupted ones step for step: on a CPU with
one thread the replay is deterministic, so the tolerance is 1e-6 (absolute) on every metric
that is not a wall-clock time.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.run_metrics import TOL, assert_same_metrics, histories

BASE = [
    "task=numgame",
    "schedule.rce_steps=4",
    "trainer.max_steps=12",
    "trainer.save_every=4",
    "logger.log_every=1",
    "eval.eval_every=4",
    "eval.num_samples=16",
    "rollout.batch_size=4",
    "rollout.group_size=4",
    "generation.max_new_tokens=4",
    "trainer.threads=1",
    "algorithm.kl_beta=0.04",
]

pytestmark = pytest.mark.slow


def command(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "grpo.run",
        *BASE,
        *extra,
        f"logger.tracking_uri=sqlite:///{out}/mlflow.db",
        f"hydra.run.dir={out}/run",
    ]


def run(out: Path, *extra: str, env=None, timeout=600) -> subprocess.CompletedProcess:
    """The run's whole console (Hydra logs to stdout, progress bars and warnings to stderr) in `.stdout`."""
    return subprocess.run(
        command(out, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def adapter(out: Path, step: int):
    from safetensors.torch import load_file

    return load_file(str(out / "run" / "checkpoints" / f"step_{step}" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = run(out)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return out


def wait_for(predicate, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before the point to kill it: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the run")


def logged_steps(out: Path) -> int:
    path = out / "run" / "metrics.jsonl"
    if not path.exists():
        return 0
    return max((json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()), default=0)


def test_sigkill_mid_grpo_then_resume_equals_the_uninterrupted_run(tmp_path, uninterrupted):
    from peft import PeftModel

    proc = subprocess.Popen(command(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # Kill at GRPO step 10 of the global 16: after the checkpoint at step 8, before the one at 12.
    wait_for(lambda: logged_steps(tmp_path) >= 10, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run" / "checkpoints" / "step_12").exists()

    resumed = run(tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "resuming from" in resumed.stdout and "step_8 (step 8, stage grpo)" in resumed.stdout

    assert_same_metrics(histories(uninterrupted), histories(tmp_path))  # one run, no duplicated step
    a, b = adapter(uninterrupted, 16), adapter(tmp_path, 16)
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() <= TOL for k in a)
    # The adapter is a standard peft checkpoint.
    from grpo.config.schema import ModelConfig
    from grpo.models.load import load_model

    base, _ = load_model(ModelConfig())
    assert isinstance(PeftModel.from_pretrained(base, str(tmp_path / "run" / "checkpoints" / "step_16")), PeftModel)


def test_crash_during_a_checkpoint_write_resumes_from_the_previous_one(tmp_path, uninterrupted):
    crashed = run(tmp_path, env={"GRPO_FAULT": "save:12"})
    assert crashed.returncode != 0
    checkpoints = tmp_path / "run" / "checkpoints"
    assert not (checkpoints / "step_12").exists()
    assert any(p.name.startswith(".step_12.") for p in checkpoints.iterdir())  # the half-written save is left aside

    resumed = run(tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "step_8 (step 8, stage grpo)" in resumed.stdout
    assert_same_metrics(histories(uninterrupted), histories(tmp_path))


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    first = run(tmp_path, "trainer.max_steps=4")
    assert first.returncode == 0, first.stdout[-3000:]
    second = run(tmp_path, "trainer.max_steps=4", "lora.rank=4")
    assert second.returncode == 2
    assert "error: trainer.resume=" in second.stdout and "lora.rank (8 -> 4)" in second.stdout
    fresh = run(
        tmp_path, "trainer.max_steps=4", "lora.rank=4", "trainer.resume=never", f"trainer.output_dir={tmp_path}/fresh"
    )
    assert fresh.returncode == 0, fresh.stdout[-3000:]


def test_a_reward_that_raises_scores_zero_and_is_counted_once(tmp_path):
    proc = run(
        tmp_path,
        "trainer.max_steps=3",
        "+reward.custom.flaky=tests.helpers.fault_rewards:raises_on_odd_length",
        "+reward.weights.flaky=1.0",
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert proc.stdout.count("reward 'flaky' raised RuntimeError") == 1
    errors = histories(tmp_path)["train/reward_errors"]
    assert sum(v for _, v in errors) > 0


def test_non_finite_updates_are_skipped_then_stop_the_run(tmp_path):
    proc = run(
        tmp_path,
        "schedule.rce_steps=0",
        "trainer.max_bad_steps=2",
        "+reward.custom.nan=tests.helpers.fault_rewards:nan_reward",
        "+reward.weights.nan=1.0",
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "update skipped (1 in a row)" in proc.stdout
    assert "stopped    2 non-finite updates in a row at step 2" in proc.stdout
    assert (tmp_path / "run" / "checkpoints" / "step_2" / "trainer_state.json").exists()  # the last good weights
    skipped = histories(tmp_path)["train/skipped"]
    assert [v for _, v in skipped] == [1.0, 1.0]


def lock_the_store_mid_run(tmp_path: Path) -> tuple[subprocess.Popen, sqlite3.Connection]:
    """An 8-step GRPO run whose MLflow database another writer holds exclusively from step 2 on:
    every MLflow write then fails until the returned connection lets go."""
    proc = subprocess.Popen(
        command(tmp_path, "schedule.rce_steps=0", "trainer.max_steps=8"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for(lambda: logged_steps(tmp_path) >= 2, proc)
    # Wait out the run's own short write locks, then hold the database exclusively.
    lock = sqlite3.connect(str(tmp_path / "mlflow.db"), timeout=60, check_same_thread=False)
    lock.execute("BEGIN EXCLUSIVE")
    return proc, lock


def test_tracking_store_locked_mid_run_does_not_stop_training(tmp_path):
    proc, lock = lock_the_store_mid_run(tmp_path)
    stderr, _ = proc.communicate(timeout=600)  # the whole console
    lock.rollback()
    lock.close()
    assert proc.returncode == 0, stderr[-3000:]
    assert stderr.count("tracking failed") == 1
    assert "tracking   FAILED mid-run" in stderr
    assert logged_steps(tmp_path) == 8  # every step kept locally


def test_tracking_store_back_before_the_end_is_given_the_steps_it_missed(tmp_path):
    proc, lock = lock_the_store_mid_run(tmp_path)
    run_log = tmp_path / "run" / "run.log"
    wait_for(lambda: "tracking failed" in run_log.read_text(), proc)  # retried, then given up: training goes on
    lock.rollback()  # the store answers again
    lock.close()
    console, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, console[-3000:]
    assert console.count("tracking failed") == 1 and "tracking is back: " in console
    assert "tracking   failed mid-run (" in console and "back at the end: what it missed was logged then" in console
    local: dict[str, list[tuple[int, float]]] = {}
    for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key, value in row.items():
            if key != "step":
                local.setdefault(key, []).append((row["step"], value))
    stored = histories(tmp_path)
    assert stored.keys() == local.keys()
    assert all(stored[k] == pytest.approx(sorted(local[k])) for k in local)  # every step, none twice
    assert max(s for s, _ in stored["train/reward"]) == 8
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run_,) = client.search_runs([client.get_experiment_by_name("grpo-suite").experiment_id])
    assert run_.info.status == "FINISHED"  # closed, not RUNNING forever
    tables = sorted(f.path for f in client.list_artifacts(run_.info.run_id, "completions"))
    assert tables == [f"completions/step_{s:06d}.json" for s in range(1, 9)]  # those of the down steps too


def test_early_stopping_keeps_the_best_checkpoint(tmp_path):
    proc = run(
        tmp_path,
        "schedule.rce_steps=0",
        "trainer.max_steps=20",
        "eval.eval_every=1",
        "schedule.grpo_lr=1e-12",
        "eval.early_stopping.enabled=true",
        "eval.early_stopping.patience=2",
        "trainer.save_limit=1",
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "early stopping: val/accuracy has not improved for 2 validations" in proc.stdout
    val = histories(tmp_path)["val/accuracy"]
    assert len(val) == 3  # the first validation is the best; two more without improvement stop the run
    best_step, best_value = max(val, key=lambda sv: (sv[1], -sv[0]))
    state = json.loads((tmp_path / "run" / "checkpoints" / f"step_{best_step}" / "trainer_state.json").read_text())
    assert state["metrics"]["val/accuracy"] == best_value
    assert f"best       val/accuracy={best_value:.3f} at step {best_step}" in proc.stdout
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert kept == [f"step_{best_step}", "step_3"]  # save_limit=1 keeps the newest, plus the best


def test_unwritable_output_dir_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = run(tmp_path, f"trainer.output_dir={blocker}/out")
    assert proc.returncode == 2
    errors = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: trainer.output_dir=") and "cannot write there" in errors[0]
