"""Data-parallel training through a real `accelerate launch` with 2 CPU processes (gloo)."""

import subprocess
import sys

import pytest
from pathlib import Path

CONFIG = str(Path(__file__).resolve().parents[1] / "conf" / "accelerate" / "ddp.yaml")
COMMON = ["+preset=minimal", "trainer.max_steps=3", "schedule.rce_steps=0", "eval.num_samples=8"]


def samples_per_step(uri: str) -> list[float]:
    import mlflow

    client = mlflow.MlflowClient(uri)
    runs = mlflow.search_runs(experiment_names=["aflow-roll-integration"], output_format="list")
    assert len(runs) == 1, "exactly one MLflow run, logged by the main process only"
    return [m.value for m in sorted(client.get_metric_history(runs[0].info.run_id, "train/num_samples"), key=lambda m: m.step)]


@pytest.mark.slow
def test_two_processes_train_the_same_global_batch_as_one(tmp_path):
    import mlflow

    single_uri, multi_uri = f"sqlite:///{tmp_path}/single.db", f"sqlite:///{tmp_path}/multi.db"
    one = subprocess.run([sys.executable, "-m", "grpo.run", *COMMON, "logger.log_every=1",
                          f"logger.tracking_uri={single_uri}", f"hydra.run.dir={tmp_path}/single"],
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", CONFIG,
                          "-m", "grpo.run", *COMMON, "logger.log_every=1",
                          f"logger.tracking_uri={multi_uri}", f"hydra.run.dir={tmp_path}/multi"],
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    mlflow.set_tracking_uri(single_uri)
    single = samples_per_step(single_uri)
    mlflow.set_tracking_uri(multi_uri)
    multi = samples_per_step(multi_uri)
    assert single == multi == [24.0, 24.0, 24.0]  # 4 prompts x 6 samples, split 2 + 2 across ranks
    assert (tmp_path / "multi" / "checkpoints" / "step_3" / "adapter_model.safetensors").exists()
    out = two.stdout + two.stderr
    assert "processes  2 (multi_cpu, cpu" in out
    assert out.count("run grpo-3steps") == 1  # one header: rank 0 alone reports


@pytest.mark.slow
def test_batch_not_divisible_by_processes_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", CONFIG,
                           "-m", "grpo.run", *COMMON, "rollout.batch_size=5", "logger=none",
                           f"hydra.run.dir={tmp_path}/run"], capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert proc.stderr.count("error: rollout.batch_size=5: prompts per step are split across processes: must be divisible by 2") == 1
