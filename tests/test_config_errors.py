"""Bad input ends in one line naming the key, the value and the rule, and starts no run."""

import os
import subprocess
import sys

import pytest

from grpo.compose import compose
from grpo.config.errors import explain


def error_line(overrides):
    with pytest.raises(Exception) as info:
        compose(overrides)
    line = explain(info.value)
    assert "\n" not in line
    return line


def test_unknown_key_names_its_path_and_the_allowed_keys():
    line = error_line(["+preset=minimal", "lora.rnak=8"])
    assert "lora.rnak" in line and "rank" in line and "alpha" in line


def test_wrong_type_names_the_key():
    line = error_line(["lora.rank=abc"])
    assert "lora.rank" in line


def test_unknown_group_option_lists_the_options():
    line = error_line(["model=gpt5"])
    assert "gpt5" in line and "tiny" in line


@pytest.mark.parametrize(
    "override,key,rule",
    [
        ("generation.temperature=-1", "generation.temperature", ">= 0"),
        ("generation.top_p=1.5", "generation.top_p", "(0, 1]"),
        ("generation.top_p=0", "generation.top_p", "(0, 1]"),
        ("schedule.grpo_lr=-1e-5", "schedule.grpo_lr", "> 0"),
        ("schedule.rce_lr=0", "schedule.rce_lr", "> 0"),
        ("rollout.group_size=1", "rollout.group_size", ">= 2"),
        ("lora.rank=0", "lora.rank", ">= 1"),
        ("task.domain_ratios={math:0.5,qa:0.3,code:0.3}", "task.domain_ratios", "sum to 1"),
        ("schedule.warmup_steps=20", "schedule.warmup_steps", "longer than the run"),
        ("algorithm.loss_agg=token_mean", "algorithm.loss_agg", "one of"),
        ("eval.num_samples=1000", "eval.num_samples", "task.val_size"),
    ],
)
def test_out_of_range_values(override, key, rule):
    overrides = ["+preset=minimal", override] if "domain_ratios" in override else [override]
    line = error_line(overrides)
    assert line.startswith(key) and rule in line, line


def test_domain_names_must_exist_in_the_task():
    line = error_line(["task=numgame", "+task.domain_ratios.math=1.0"])
    assert "no domain 'math'" in line


def test_adding_a_mapping_key_without_plus_says_how():
    line = error_line(["task=numgame", "task.domain_ratios={math:1.0}"])
    assert "+task.domain_ratios.math=VALUE" in line


def test_rce_only_run_allows_group_size_one():
    """The group-size rule is GRPO's: with no GRPO steps a group of one is fine."""
    comp = compose(["rollout.group_size=1", "trainer.max_steps=0"])
    assert comp.derived.grpo_steps == 0


@pytest.mark.parametrize(
    "override,needle",
    [
        ("lora.rnak=8", "unknown key 'lora.rnak'"),
        ("generation.temperature=-1", "generation.temperature=-1.0: must be >= 0"),
    ],
)
def test_cli_exits_with_one_line_and_creates_no_run(tmp_path, override, needle):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    db = tmp_path / "mlflow.db"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpo.run",
            "+preset=minimal",
            override,
            f"logger.tracking_uri=sqlite:///{db}",
            f"hydra.run.dir={tmp_path}/run",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: {lines[0][7:]}"] and needle in lines[0], proc.stderr
    assert not db.exists() and not (tmp_path / "run").exists()
