"""`python -m grpo.bench`: real processes on a tiny workload; the JSON it prints is the contract."""

import json
import subprocess
import sys

import pytest

PHASES = {"generation", "replay", "reference_forward", "policy_forward", "backward", "optimizer", "other"}


def bench(*args, timeout=300):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpo.bench",
            "--prompts",
            "2",
            "--group",
            "2",
            "--new-tokens",
            "4",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--repeats",
            "1",
            "--threads",
            "1",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(proc.stdout.strip().splitlines()[-1])


def test_bench_times_our_step_and_prints_a_table_and_json(tmp_path):
    out, result = bench("--json", str(tmp_path / "bench.json"))
    assert json.loads((tmp_path / "bench.json").read_text()) == result
    assert result["workload"]["model"] == "tiny" and result["workload"]["steps"] == 2
    ours = result["ours"]
    assert ours["runs"] == 1 and ours["step_time_s"] > 0 and ours["peak_rss_mib"] > 0
    assert set(ours["phases_s"]) == PHASES and ours["phases_s"]["generation"] > 0
    assert ours["tokens_per_s"] > 0 and ours["generation_tokens_per_s"] > 0
    assert "trl" not in result and "median_ratio" not in result
    assert "| median step |" in out and "generation" in out


def test_bench_without_kl_skips_the_reference_forward():
    _, result = bench("--no-kl", "--engine", "hf", "--no-plain-decoder")
    assert result["ours"]["phases_s"]["reference_forward"] < 1e-3
    assert result["ours"]["engine"] == "HFGenerateEngine"


def test_bench_ladder_times_each_speed_change_in_one_process():
    out, result = bench("--ladder", "--steps", "1")
    from grpo.benchmark.workload import LADDER

    assert list(result["ladder"]) == list(LADDER)
    assert result["ladder"]["before"]["engine"] == "HFGenerateEngine"
    assert result["ladder"]["merged-engine"]["engine"] == "MergedEngine"
    assert "| before |" in out and "| merged-engine |" in out


@pytest.mark.slow
def test_bench_vs_trl_runs_both_sizes_interleaved_and_reports_the_ratios():
    pytest.importorskip("trl")
    out, result = bench("--vs", "trl", "--model", "tiny", "small", timeout=900)
    assert set(result["models"]) == {"tiny", "small"}
    for model, r in result["models"].items():
        assert r["workload"]["model"] == model
        assert r["trl"]["runs"] == 1 and r["trl"]["step_time_s"] > 0 and r["trl"]["phases_s"]["generation"] > 0
        (pair,) = r["pairs"]
        assert pair["ratio"] == pytest.approx(pair["ours_s"] / pair["trl_s"])
        assert r["median_ratio"] == pair["ratio"]
    assert out.count("median ratio") == 2


def test_step_phases_report_the_replay_phase_of_the_step_timer():
    """Every phase the GRPO step times is a bench phase of its own, and not counted in "other"."""
    from grpo.benchmark.ours import step_phases
    from grpo.benchmark.workload import PHASES as BENCH_PHASES
    from grpo.timing import StepTimer

    timer = StepTimer()
    timer.seconds.update(step=1.0, generation=0.4, replay=0.1, reference_forward=0.05, policy_forward=0.2)
    phases = step_phases(timer)
    assert phases["replay"] == 0.1 and phases["other"] == pytest.approx(0.25)
    assert set(BENCH_PHASES) == set(phases) - {"step"} == PHASES
