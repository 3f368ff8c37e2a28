"""`python -m grpo.eval` on a saved checkpoint, and the metrics it reports (grpo/metrics.py)."""

from __future__ import annotations

import itertools
import json
import os

import pytest
from omegaconf import OmegaConf

from grpo.checkpoint import save_checkpoint
from grpo.compose import compose
from grpo.eval import evaluate_checkpoint, find_checkpoint, main, summary_table
from grpo.metrics import ks_for, majority_correct, metric_keys, pass_at_k, summarize
from grpo.tables import to_text


# ---------------------------------------------------------------------------- pure metrics
@pytest.mark.parametrize("n,c,k", [(n, c, k) for n in (1, 2, 5) for c in range(n + 1) for k in range(1, n + 1)])
def test_pass_at_k_is_the_exact_probability(n, c, k):
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    exact = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(exact)


def test_majority_and_ks():
    assert majority_correct(["5", "4", "5", None], [1, 0, 1, 0]) == 1.0
    assert majority_correct(["4", "5", "5", "4"], [0, 1, 1, 0]) == 0.0  # a tie goes to the first answer to reach it
    assert majority_correct([None, None], [1, 1]) == 0.0
    assert ks_for(1) == [1] and ks_for(4) == [1, 2, 4] and ks_for(6) == [1, 2, 4, 6]


def test_summarize_per_domain():
    s = summarize(["math", "math", "qa", "qa"], [1, 0, 0, 0], [1.0, 0.2, 0.4, 0.0], ["5", "4", "x", "y"], n=2)
    assert s["math"] == {
        "prompts": 1,
        "accuracy": 0.5,
        "reward": 0.6,
        "pass@1": 0.5,
        "pass@2": 1.0,
        "mean@2": 0.5,
        "best@2": 1.0,
        "maj@2": 1.0,
    }
    assert list(s) == ["math", "qa", "all"] and s["all"]["best@2"] == pytest.approx(0.7)
    assert metric_keys(s, "eval/val")["eval/val/pass_at_2/math"] == 1.0
    table = to_text(summary_table(s, "title"))
    assert table.splitlines()[0] == "title" and "pass@2" in table and table.splitlines()[-1].startswith("all")
    with pytest.raises(ValueError):
        summarize(["math"] * 3, [1] * 3, [1] * 3, ["1"] * 3, n=2)


# ---------------------------------------------------------------------------- the CLI on a checkpoint
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory as grpo.run leaves it: .hydra/config.yaml, hydra.yaml, checkpoints/step_3."""
    from grpo.models.load import load_model
    from grpo.models.lora import apply_lora

    d = tmp_path_factory.mktemp("run")
    comp = compose(["+experiment=aflow_mixed", f"logger.tracking_uri=sqlite:///{d}/mlflow.db", "trainer.device=cpu"])
    (d / ".hydra").mkdir()
    (d / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(comp.raw))
    (d / ".hydra" / "hydra.yaml").write_text(OmegaConf.to_yaml({"hydra": {"runtime": {"choices": comp.choices}}}))
    model, tokenizer = load_model(comp.cfg.model)
    save_checkpoint(
        str(d / "checkpoints"), 3, apply_lora(model, comp.cfg.lora), tokenizer, {"step": 3, "run_name": "tiny-run"}, {}
    )
    return d


def _mlflow(d):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{d}/mlflow.db")


def test_find_checkpoint(run_dir, tmp_path):
    step = str(run_dir / "checkpoints" / "step_3")
    assert find_checkpoint(str(run_dir)) == step and find_checkpoint(step) == step
    with pytest.raises(Exception, match="neither a checkpoint"):
        find_checkpoint(str(tmp_path))


def test_eval_prints_a_per_domain_table_and_logs_a_run_tagged_eval(run_dir, capsys):
    main(["--checkpoint", str(run_dir)])
    out = capsys.readouterr().out
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.split() and line.split()[0] in ("code", "math", "qa", "all")
    }
    assert {k: int(v[1]) for k, v in rows.items()} == {"code": 5, "math": 6, "qa": 5, "all": 16}  # the val file's mix
    client = _mlflow(run_dir)
    runs = client.search_runs(
        [client.get_experiment_by_name("aflow-roll-integration").experiment_id], "tags.eval = 'true'"
    )
    assert len(runs) == 1
    metrics = runs[0].data.metrics
    assert {"eval/val/accuracy", "eval/val/reward", "eval/val/accuracy/math", "eval/val/reward/code"} <= set(metrics)
    assert runs[0].data.tags["checkpoint"].endswith("step_3")


def test_sampled_eval_with_n_samples_reports_pass_at_k(run_dir):
    summary, table = evaluate_checkpoint(
        str(run_dir),
        [
            "eval.generation.greedy=false",
            "eval.generation.temperature=0.6",
            "eval.generation.top_p=0.95",
            "eval.generation.n=4",
            "logger.backend=none",
        ],
        split="test",
        limit=6,
        progress=False,
    )
    assert {"pass@1", "pass@2", "pass@4", "mean@4", "best@4", "maj@4"} <= set(summary["all"])
    assert summary["all"]["prompts"] == 6 and "temperature 0.6, top_p 0.95, n 4" in table


def test_eval_adds_to_an_existing_run(run_dir):
    client = _mlflow(run_dir)
    run_id = client.create_run(client.get_experiment_by_name("aflow-roll-integration").experiment_id).info.run_id
    evaluate_checkpoint(str(run_dir), [], split="val", limit=3, run_id=run_id, progress=False)
    history = client.get_metric_history(run_id, "eval/val/accuracy")
    assert [m.step for m in history] == [3]  # at the checkpoint's step


def test_base_model_and_errors(capsys):
    summary, _ = evaluate_checkpoint(None, ["+experiment=aflow_mixed", "logger.backend=none"], limit=2, progress=False)
    assert summary["all"]["prompts"] == 2
    with pytest.raises(SystemExit) as info:
        main(["--split", "test", "logger.backend=none"])  # the number game has no test split
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().startswith("error: --split='test'")
    with pytest.raises(SystemExit):
        main(["--checkpoint", os.devnull])


def test_trainer_state_is_read_for_the_step(run_dir):
    state = json.loads((run_dir / "checkpoints" / "step_3" / "trainer_state.json").read_text())
    assert state["step"] == 3
