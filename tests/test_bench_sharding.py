"""`python -m grpo.bench --parallel`: DDP against FSDP2 in one launch of 2 gloo processes (tiny model)."""

import json
import subprocess
import sys

from tests.helpers.subprocess_env import child_env

MEMORY = {"params_bytes", "grads_bytes", "optimizer_bytes", "trained_bytes", "sampler_bytes", "total_bytes"}


def test_parallel_bench_reports_each_rank_and_fsdp_holds_half(tmp_path):
    path = tmp_path / "sharding.json"
    command = [sys.executable, "-m", "grpo.bench", "--parallel", "--model", "tiny", "--steps", "2", "--warmup", "1"]
    command += ["--threads", "1", "--batch", "2", "--seq-len", "16", "--json", str(path)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=child_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(path.read_text())
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == result
    assert "| tiny (0.1M) | 0 | fsdp/ddp |" in proc.stdout
    assert result["processes"] == 2 and result["workload"]["lora"] == "none"
    (model,) = result["models"]
    assert model["model"] == "tiny" and model["parameters"] > 0
    assert [r["rank"] for r in model["ranks"]] == [0, 1]
    whole = 4 * model["parameters"]  # fp32
    for rank in model["ranks"]:
        ddp, fsdp = rank["ddp"], rank["fsdp"]
        for s in (ddp, fsdp):
            assert s.keys() >= MEMORY and len(s["step_times_s"]) == 2 and s["step_time_s"] > 0
            assert len(s["losses"]) == 3
        # Data parallel: the whole model on each rank, and its sampler is the policy itself.
        assert ddp["params_bytes"] == ddp["grads_bytes"] == whole and ddp["sampler_bytes"] == 0
        assert 2 * whole <= ddp["optimizer_bytes"] <= 2 * whole + 1024  # AdamW's two moments (+ step counts)
        # FSDP over 2 processes: each holds about half of parameters, gradients and optimizer state...
        for key in ("params_bytes", "grads_bytes", "optimizer_bytes", "trained_bytes"):
            assert 0.45 <= rank["ratio"][key] <= 0.55, (key, rank["ratio"][key])
        # ...plus the whole sampler copy a rollout reads.
        assert fsdp["sampler_bytes"] == whole and fsdp["refresh_time_s"] > 0
        assert rank["ratio"]["sampler_bytes"] is None
        assert rank["loss_max_abs_diff"] < 1e-4  # the same training, step for step
    assert model["ranks"][0]["fsdp"]["params_bytes"] + model["ranks"][1]["fsdp"]["params_bytes"] == whole
