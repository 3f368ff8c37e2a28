"""`python -m grpo.bench --engine merged vllm --new-tokens ...`: engines side by side in one run,
vLLM included (a real worker process each). Runs in .venv-vllm (`bash .ci/vllm`)."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.vllm_setup import ENV, require_vllm

pytestmark = pytest.mark.vllm
require_vllm()


def test_bench_puts_engines_side_by_side_at_each_length(tmp_path):
    args = ["--model", "tiny_vllm", "--engine", "merged", "vllm", "--new-tokens", "4", "80"]
    args += ["--prompts", "2", "--group", "2", "--steps", "2", "--warmup", "1", "--repeats", "1", "--threads", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", "grpo.bench", *args, "--json", str(tmp_path / "bench.json")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **ENV},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "bench.json").read_text())
    cells = {(c["new_tokens"], c["engine_choice"]): c for c in result["grid"]}
    assert set(cells) == {(4, "merged"), (4, "vllm"), (80, "merged"), (80, "vllm")}
    assert cells[(80, "vllm")]["engine"] == "VLLMEngine" and cells[(80, "merged")]["engine"] == "MergedEngine"
    for cell in cells.values():
        assert cell["step_time_s"] > 0 and cell["generation_tokens_per_s"] > 0
    # 80 tokens fit: the bench widened tiny_vllm's 64-token context, every completion is full length
    assert cells[(80, "vllm")]["tokens_per_s"] * cells[(80, "vllm")]["step_time_s"] == pytest.approx(2 * 2 * 80)
    assert "| tiny_vllm | 80 |" in proc.stdout and "vllm gen tok/s" in proc.stdout
