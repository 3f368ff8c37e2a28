"""FSDP2 over 2 CPU processes (gloo), launched as users launch it: `accelerate launch --config_file
conf/accelerate/fsdp.yaml -m grpo.run ...`. Sharded training must give the numbers of data-parallel
training, resume exactly, reshard its checkpoints and export what one process evaluates."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.run_metrics import assert_same_metrics, histories
from tests.helpers.subprocess_env import child_env

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {p: str(ROOT / "conf" / "accelerate" / f"{p}.yaml") for p in ("ddp", "fsdp")}
RUN = [  # 2 RCE steps, then 6 GRPO steps: both stages on the run's one optimizer
    "task=numgame",
    "schedule.rce_steps=2",
    "trainer.max_steps=6",
    "trainer.save_every=2",
    "logger.log_every=1",
    "eval.eval_every=4",
    "eval.num_samples=16",
    "rollout.batch_size=4",
    "rollout.group_size=4",
    "generation.max_new_tokens=4",
    "trainer.threads=1",
    "algorithm.num_iterations=2",  # two updates per rollout: old log-probs come from the sampler copy
    "algorithm.kl_beta=0.04",  # the KL reference: the adapter-off policy, or a sharded frozen copy
]
TOL = 1e-5


def launch(parallel: str, out: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            CONFIGS[parallel],
            "-m",
            "grpo.run",
            *RUN,
            *extra,
            f"logger.tracking_uri=sqlite:///{out}/mlflow.db",
            f"hydra.run.dir={out}/run",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=child_env(**(env or {})),
    )


def weights(checkpoint: Path) -> dict:
    from safetensors.torch import load_file

    name = "adapter_model.safetensors" if (checkpoint / "adapter_model.safetensors").exists() else "model.safetensors"
    return load_file(str(checkpoint / name))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] - b[key]).abs().max().item() <= TOL, key


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory):
    """The uninterrupted FSDP run and its data-parallel twin, both with LoRA."""
    out = {p: tmp_path_factory.mktemp(f"lora-{p}") for p in ("ddp", "fsdp")}
    for parallel, path in out.items():
        proc = launch(parallel, path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_fsdp_equals_data_parallel_with_lora(lora_runs):
    ddp, fsdp = histories(lora_runs["ddp"]), histories(lora_runs["fsdp"])
    for key in ("train/loss/total", "train/kl", "train/reward", "rce/loss", "val/accuracy"):
        assert key in fsdp, key
    assert_same_metrics(ddp, fsdp, tol=TOL)
    last = Path("run/checkpoints/step_8")
    assert_same_weights(weights(lora_runs["ddp"] / last), weights(lora_runs["fsdp"] / last))
    assert (lora_runs["fsdp"] / last / "sharded" / ".metadata").exists()
    assert len(list((lora_runs["fsdp"] / last / "sharded").glob("*.distcp"))) == 2  # one file per process


@pytest.mark.slow
def test_fsdp_equals_data_parallel_without_lora(tmp_path):
    out = {p: tmp_path / p for p in ("ddp", "fsdp")}
    for parallel, path in out.items():
        proc = launch(parallel, path, "lora=none", "schedule.rce_lr=1e-3", "schedule.grpo_lr=1e-4")
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fsdp over 2 process(es), full shard" in proc.stdout + proc.stderr
    assert_same_metrics(histories(out["ddp"]), histories(out["fsdp"]), tol=TOL)
    last = Path("run/checkpoints/step_8")
    assert_same_weights(weights(out["ddp"] / last), weights(out["fsdp"] / last))


@pytest.mark.slow
def test_fsdp_killed_mid_save_resumes_as_if_never_stopped(tmp_path, lora_runs):
    """Rank 0 dies writing step 6 (after both processes wrote their shards); the restarted launch
    resumes from step 4's shards (optimizer mid-GRPO) and ends as the uninterrupted run did."""
    broken = tmp_path / "broken"
    crashed = launch("fsdp", broken, env={"GRPO_FAULT": "save:6"})
    assert crashed.returncode != 0
    assert not (broken / "run" / "checkpoints" / "step_6").exists()
    resumed = launch("fsdp", broken)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step_4 (step 4, stage grpo)" in resumed.stdout + resumed.stderr
    assert_same_metrics(histories(lora_runs["fsdp"]), histories(broken), tol=TOL)
    last = Path("run/checkpoints/step_8")
    assert_same_weights(weights(lora_runs["fsdp"] / last), weights(broken / last))


@pytest.mark.slow
def test_sharded_checkpoint_resumes_on_one_process(tmp_path, lora_runs):
    """Another process count reshards on load; only rank 0's random stream continues (warned)."""
    out = tmp_path / "one"
    shutil.copytree(lora_runs["fsdp"] / "run" / "checkpoints" / "step_4", out / "checkpoints" / "step_4")
    proc = subprocess.run(
        [sys.executable, "-m", "grpo.run", *RUN, "trainer.parallel=fsdp", "logger=none", f"trainer.output_dir={out}"]
        + [f"hydra.run.dir={tmp_path}/hydra"],
        capture_output=True,
        text=True,
        timeout=900,
        env=child_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out_text = proc.stdout + proc.stderr
    assert "resuming from" in out_text and "saved by 2 process(es), resumed by 1" in out_text
    assert (out / "checkpoints" / "step_8" / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_shards_reload_exactly_on_two_processes_and_on_one(tmp_path):
    worker = str(ROOT / "tests" / "helpers" / "fsdp_reshard_worker.py")
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", worker]
    for command in (two + ["save"], two + ["load"], [sys.executable, worker, "load"]):
        proc = subprocess.run(command + [str(tmp_path)], capture_output=True, text=True, timeout=600, env=child_env())
        assert proc.returncode == 0, proc.stderr[-3000:]
    for processes in (2, 1):
        report = json.loads((tmp_path / f"loaded{processes}.json").read_text())
        assert report == {"model": True, "exp_avg": True, "sampler": True, "keys": 17}, processes


@pytest.mark.slow
def test_exported_adapter_evaluates_in_one_process(lora_runs):
    """The checkpoint's peft adapter (gathered from the shards) in a one-process `grpo.eval`: the same
    greedy accuracy the sharded run measured on the same 16 prompts."""
    from grpo.eval import evaluate_checkpoint

    checkpoint = lora_runs["fsdp"] / "run" / "checkpoints" / "step_8"
    summary, _ = evaluate_checkpoint(str(checkpoint), ["logger.backend=none"], limit=16, progress=False)
    measured = histories(lora_runs["fsdp"])["val/accuracy"][-1][1]
    assert summary["all"]["prompts"] == 16
    assert math.isclose(summary["all"]["accuracy"], measured, abs_tol=1e-9), (summary, measured)


def test_sharding_switches_may_change_on_resume_but_not_the_strategy():
    from grpo.checkpoint import incompatible_keys

    saved = {
        "trainer.parallel": "fsdp",
        "trainer.fsdp.enable_cpu_offload": False,
        "trainer.offload.offload_params": True,
    }
    moved = {**saved, "trainer.fsdp.enable_cpu_offload": True, "trainer.offload.offload_params": False}
    assert incompatible_keys(saved, moved) == []
    assert incompatible_keys(saved, {**saved, "trainer.parallel": "ddp"}) == ["trainer.parallel"]
