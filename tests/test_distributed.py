"""Data-parallel training through a real `accelerate launch` with 2 CPU processes (gloo)."""

import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = str(Path(__file__).resolve().parents[1] / "conf" / "accelerate" / "ddp.yaml")
COMMON = ["+preset=minimal", "trainer.max_steps=3", "schedule.rce_steps=0", "eval.num_samples=8"]


def samples_per_step(uri: str) -> list[float]:
    import mlflow

    client = mlflow.MlflowClient(uri)
    runs = mlflow.search_runs(experiment_names=["aflow-roll-integration"], output_format="list")
    assert len(runs) == 1, "exactly one MLflow run, logged by the main process only"
    return [
        m.value
        for m in sorted(client.get_metric_history(runs[0].info.run_id, "train/num_samples"), key=lambda m: m.step)
    ]


@pytest.mark.slow
def test_two_processes_train_the_same_global_batch_as_one(tmp_path):
    import mlflow

    single_uri, multi_uri = f"sqlite:///{tmp_path}/single.db", f"sqlite:///{tmp_path}/multi.db"
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpo.run",
            *COMMON,
            "logger.log_every=1",
            f"logger.tracking_uri={single_uri}",
            f"hydra.run.dir={tmp_path}/single",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            CONFIG,
            "-m",
            "grpo.run",
            *COMMON,
            "logger.log_every=1",
            f"logger.tracking_uri={multi_uri}",
            f"hydra.run.dir={tmp_path}/multi",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
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
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            CONFIG,
            "-m",
            "grpo.run",
            *COMMON,
            "rollout.batch_size=5",
            "logger=none",
            f"hydra.run.dir={tmp_path}/run",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0
    assert (
        proc.stderr.count(
            "error: rollout.batch_size=5: prompts per step are split across processes: must be divisible by 2"
        )
        == 1
    )


def test_sharded_strategies_are_read_from_what_accelerate_launch_exports():
    from grpo.launch import launch_error, sharded_strategy

    assert sharded_strategy({}) is None and launch_error([], {}) is None
    assert sharded_strategy({"ACCELERATE_USE_FSDP": "true"}) == "FSDP"
    assert sharded_strategy({"ACCELERATE_USE_DEEPSPEED": "True"}) == "DEEPSPEED"
    assert sharded_strategy({"ACCELERATE_USE_FSDP": "false", "ACCELERATE_USE_DEEPSPEED": "false"}) is None
    line = launch_error([], {"ACCELERATE_USE_DEEPSPEED": "true"})
    assert "\n" not in line and "DEEPSPEED" in line and "trainer.parallel=fsdp" in line
    assert "conf/accelerate/fsdp.yaml" in line


def test_an_fsdp_launch_means_trainer_parallel_fsdp():
    from grpo.launch import launch_error, launch_overrides

    fsdp = {"ACCELERATE_USE_FSDP": "true"}
    assert launch_overrides(["+preset=minimal"], fsdp) == ["trainer.parallel=fsdp"]
    assert launch_overrides(["trainer.parallel=fsdp"], fsdp) == [] and launch_overrides(["x=1"], {}) == []
    assert launch_error(["trainer.parallel=fsdp"], fsdp) is None
    line = launch_error(["trainer.parallel=ddp"], fsdp)
    assert "\n" not in line and "trainer.parallel=ddp under an FSDP launch" in line


def test_cpu_launch_that_started_one_process_is_named():
    from grpo.launch import requested_cpu_processes, single_cpu_process_note

    launcher = ["/usr/bin/python", "/usr/bin/accelerate", "launch", "--cpu", "--num_processes", "2", "-m", "grpo.run"]
    assert requested_cpu_processes(launcher) == 2
    assert requested_cpu_processes(["accelerate", "launch", "--num-processes=4"]) == 4
    assert requested_cpu_processes(["accelerate", "launch", "--cpu"]) == 1
    module_launcher = ["python", "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "-m", "grpo.run"]
    assert "started 1 process" in single_cpu_process_note({"ACCELERATE_USE_CPU": "true"}, module_launcher)
    cpu_env = {"ACCELERATE_USE_CPU": "True"}
    note = single_cpu_process_note(cpu_env, launcher)
    assert "started 1 process" in note and "--config_file conf/accelerate/ddp.yaml --num_processes 2" in note
    assert single_cpu_process_note({**cpu_env, "WORLD_SIZE": "2"}, launcher) is None  # really distributed
    assert single_cpu_process_note({}, launcher) is None  # not launched with --cpu
    assert single_cpu_process_note(cpu_env, ["bash"]) is None  # not under accelerate launch


@pytest.mark.slow
def test_the_plain_cpu_launch_trains_one_process_and_says_so(tmp_path):
    """The issue's `accelerate launch --cpu --num_processes 2`: accelerate starts one process
    (its CPU launcher needs mpirun for more). The run is right and the log says how to get 2."""
    import mlflow

    uri = f"sqlite:///{tmp_path}/cpu.db"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--cpu",
            "--num_processes",
            "2",
            "-m",
            "grpo.run",
            *COMMON,
            "logger.log_every=1",
            f"logger.tracking_uri={uri}",
            f"hydra.run.dir={tmp_path}/run",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    mlflow.set_tracking_uri(uri)
    assert samples_per_step(uri) == [24.0, 24.0, 24.0]
    out = proc.stdout + proc.stderr
    assert "started 1 process" in out and "processes  1" in out


DDP_RESUME = [
    "task=numgame",
    "schedule.rce_steps=2",
    "trainer.max_steps=6",
    "trainer.save_every=2",
    "logger.log_every=1",
    "eval.eval_every=2",
    "eval.num_samples=16",
    "rollout.batch_size=4",
    "rollout.group_size=4",
    "generation.max_new_tokens=4",
    "trainer.threads=1",
    "algorithm.kl_beta=0.04",
]


def ddp_run(out, env=None):
    import os

    return subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            CONFIG,
            "-m",
            "grpo.run",
            *DDP_RESUME,
            f"logger.tracking_uri=sqlite:///{out}/mlflow.db",
            f"hydra.run.dir={out}/run",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.slow
def test_two_process_run_killed_mid_save_resumes_as_if_never_stopped(tmp_path):
    """Each rank's random stream is saved and restored: after a crash, both ranks sample what
    they would have sampled, so the resumed run's metrics equal the uninterrupted run's."""
    from tests.helpers.run_metrics import assert_same_metrics, histories

    whole, broken = tmp_path / "whole", tmp_path / "broken"
    first = ddp_run(whole)
    assert first.returncode == 0, first.stderr[-3000:]
    crashed = ddp_run(broken, env={"GRPO_FAULT": "save:6"})  # rank 0 dies writing global step 6 (GRPO step 4)
    assert crashed.returncode != 0
    assert not (broken / "run" / "checkpoints" / "step_6").exists()
    resumed = ddp_run(broken)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step_4 (step 4, stage grpo)" in resumed.stdout + resumed.stderr
    assert_same_metrics(histories(whole), histories(broken))


@pytest.mark.slow
@pytest.mark.parametrize(
    "estimator,scale",
    [("grpo", "batch"), ("reinforce_pp", "group"), ("reinforce_pp_baseline", "group"), ("grpo", "group")],
)
def test_batch_level_advantages_use_the_global_batch(tmp_path, estimator, scale):
    """Two real gloo processes: each gets the slice of the advantages one process computes on all rewards."""
    import json

    import torch

    from grpo.algorithms.advantages import compute_advantages
    from tests.helpers.batch_advantages_worker import REWARDS
    from tests.helpers.subprocess_env import child_env

    worker = str(Path(__file__).resolve().parent / "helpers" / "batch_advantages_worker.py")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            worker,
            str(tmp_path),
            estimator,
            scale,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads((tmp_path / "rank0.json").read_text()) + json.loads((tmp_path / "rank1.json").read_text())
    want = compute_advantages(
        torch.tensor(REWARDS[0] + REWARDS[1]), 2, estimator=estimator, scale_rewards=scale, eps=1e-4
    )
    assert torch.allclose(torch.tensor(got), want, atol=1e-6)
