"""The main job end to end: a real `python -m grpo.run` process, a real MLflow SQLite store."""

import subprocess
import sys

import pytest


def run_cli(args, tmp_path, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "grpo.run", *args, f"hydra.run.dir={tmp_path}/run"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_minimal_preset_trains_checkpoints_and_lands_in_mlflow(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["+preset=minimal", f"logger.tracking_uri={uri}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    for expected in (
        "run grpo-10steps-4batch-6samples-rce64-minimal",
        "warm-up 2 steps",
        "240 completions",
        "bounded by the model's context",
        "GRPO: 100%",
        "mlflow ui --backend-store-uri",
    ):
        assert expected in out, expected
    assert (tmp_path / "run" / "checkpoints" / "step_64" / "trainer_state.json").exists()  # end of RCE
    assert (tmp_path / "run" / "checkpoints" / "step_69" / "adapter_model.safetensors").exists()  # 64 RCE + 5 GRPO
    assert (tmp_path / "run" / "checkpoints" / "step_74" / "adapter_config.json").exists()

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["aflow-roll-integration"])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["status"] == "FINISHED"
    assert run["params.lora.rank"] == "64" and run["params.derived.warmup_steps"] == "2"
    assert (
        run["tags.preset"] == "minimal" and run["tags.mlflow.runName"] == "grpo-10steps-4batch-6samples-rce64-minimal"
    )
    client = mlflow.MlflowClient(uri)
    rewards = client.get_metric_history(run["run_id"], "train/reward")
    assert [m.step for m in sorted(rewards, key=lambda m: m.step)] == [
        65,
        70,
        74,
    ]  # log_every 5 (global steps) + the last
    assert client.get_metric_history(run["run_id"], "val/accuracy")
    artifacts = {a.path for a in client.list_artifacts(run["run_id"])}
    assert {"config", "completions", "adapter"} <= artifacts
    tables = client.list_artifacts(run["run_id"], "completions")
    assert len(tables) == 3  # one per logged step, none overwritten


@pytest.mark.slow
def test_returned_objective_and_no_tracking(tmp_path):
    proc = run_cli(["trainer.max_steps=2", "schedule.rce_steps=2", "logger=none", "eval.num_samples=8"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tracking   none" in proc.stdout + proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_and_gradient_checkpointing_train(tmp_path, precision):
    """accelerate's autocast and transformers' gradient checkpointing, both real, on the CPU."""
    import json
    import math

    proc = run_cli(
        [
            "+preset=minimal",
            "trainer.max_steps=2",
            "schedule.rce_steps=2",
            "logger=none",
            "logger.log_every=1",
            f"trainer.mixed_precision={precision}",
            "model.gradient_checkpointing=true",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r[k] for r in rows for k in ("rce/loss", "train/loss/total", "train/grad_norm") if k in r]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses), losses
