"""Offline candidates (seed 004's beams): the file format, and the RCE stage reading them."""

from __future__ import annotations

import json

import pytest
import torch

from grpo.algorithms.rce import rce_weights
from grpo.checks import check
from grpo.compose import compose
from grpo.config.errors import ConfigError
from grpo.eval import build_context
from grpo.stages.rce import file_candidates, kept_candidates, rce_step
from grpo.stages.scoring import score
from grpo.tasks.candidates import load_candidates
from grpo.tasks.files import DataError
from grpo.tasks.registry import build_task

LEVER = "experiments/data/lever/candidates.jsonl"


def write(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


def test_both_layouts_sorted_by_score(tmp_path):
    path = write(
        tmp_path / "c.jsonl",
        [
            {
                "prompt": "1+1=",
                "answer": "2",
                "candidates": [{"text": "3", "score": 0.2, "correct": 0}, {"text": "2", "score": 0.7, "correct": True}],
            },
            {
                "prompt": "2+2=",
                "candidates": ["4", "5", "22"],
                "score_list": [0.1, 0.5, 0.3],
                "correct_list": [1, 0, 0],
            },
        ],
    )
    found = load_candidates(path)
    assert [(c.text, c.score, c.correct) for c in found.top("1+1=")] == [("2", 0.7, 1.0), ("3", 0.2, 0.0)]
    assert [c.text for c in found.top("2+2=", 2)] == ["5", "22"]
    assert found.columns(["1+1=", "1+1=", "2+2="], [" 2 ", "9", "4"]) == {
        "candidate_score": [0.7, None, 0.1],
        "candidate_correct": [1.0, None, 1.0],
    }


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"prompt": "x", "candidates": []}, "'candidates' must be a non-empty list"),
        ({"prompt": "x", "candidates": [{"text": "a", "correct": 1}]}, "missing 'score'"),
        ({"prompt": "x", "candidates": [{"text": "a", "score": 0.1, "correct": 2}]}, "'correct' must be 0 or 1"),
        ({"prompt": "x", "candidates": [{"text": "a", "score": "high", "correct": 1}]}, "must be a finite number"),
        (
            {"prompt": "x", "candidates": ["a", "b"], "score_list": [0.1], "correct_list": [1, 0]},
            "'score_list' must be a list as long",
        ),
        ({"prompt": "1+1=", "candidates": [{"text": "2", "score": 0.1, "correct": 1}]}, "already given at line 1"),
        ({"candidates": [{"text": "2", "score": 0.1, "correct": 1}]}, "missing 'prompt'"),
    ],
)
def test_bad_records_fail_in_one_line_naming_file_and_line(tmp_path, bad, message):
    path = write(
        tmp_path / "c.jsonl", [{"prompt": "1+1=", "candidates": [{"text": "2", "score": 0.5, "correct": 1}]}, bad]
    )
    with pytest.raises(DataError) as info:
        load_candidates(path)
    assert str(info.value).startswith(f"{path}:2") and message in str(info.value) and "\n" not in str(info.value)


def test_a_candidates_file_doubles_as_the_train_split():
    task = build_task(compose(["+experiment=lever_rce_only"]).cfg.task)
    assert len(task.train) == 48 and all(ex.answer.isdigit() for ex in task.train)


def test_checks_need_the_candidates_file():
    with pytest.raises(ConfigError, match="algorithm.rce.candidates='file': needs task.candidates_path"):
        compose(["+experiment=lever_rce_only", "task.candidates_path=null", "reward.quality_source=policy"])
    with pytest.raises(ConfigError, match="reward.quality_source='file'"):
        compose(["+experiment=lever_rce_only", "task.candidates_path=null"])
    comp = compose(["+experiment=lever_rce_only", "algorithm.rce.drop_incorrect_below=0.1"])
    comp.cfg.reward.type, comp.cfg.reward.weights = "weighted", {"format": 1.0}
    with pytest.raises(ConfigError, match="drop_incorrect_below=0.1: needs a 'correctness' reward"):
        check(comp.cfg, grpo_steps=0, warmup_steps=0)


@pytest.fixture(scope="module")
def lever_ctx():
    comp = compose(["+experiment=lever_rce_only", "logger.backend=none", "trainer.device=cpu"])
    task = build_task(comp.cfg.task)
    return build_context(comp, None, task, task.val), task


def test_file_candidates_pad_groups_to_one_size(lever_ctx):
    ctx, task = lever_ctx
    found = load_candidates(LEVER)
    examples = list(task.train[:4])
    sizes = [len(found.top(ex.prompt)) for ex in examples]
    prompts, rollout, k, real = file_candidates(ctx, examples)
    assert k == max(sizes) and len(prompts) == 4 * k == len(rollout.texts)
    assert real.view(4, k).sum(1).tolist() == sizes
    assert [t for t, r in zip(rollout.texts, real) if r] == [c.text for ex in examples for c in found.top(ex.prompt)]

    scores = score(ctx, examples, prompts, rollout, k)
    first = found.top(examples[0].prompt)[0]
    assert scores.components["beam_score"][0].item() == pytest.approx(first.score)
    assert scores.total[0].item() == pytest.approx(0.5 * first.score + 0.8 * first.correct)
    weights = rce_weights(scores.total, k, keep=kept_candidates(ctx, scores, real))
    assert weights[~real].abs().sum() == 0 and weights.view(4, k).sum(1).tolist() == pytest.approx([1.0] * 4)


def test_top_k_and_the_low_quality_filter(lever_ctx):
    ctx, task = lever_ctx
    examples = list(task.train[:8])
    rce = ctx.cfg.algorithm.rce
    rce.num_candidates, rce.drop_incorrect_below = 2, 0.2
    try:
        prompts, rollout, k, real = file_candidates(ctx, examples)
        assert k == 2
        scores = score(ctx, examples, prompts, rollout, k)
        keep = kept_candidates(ctx, scores, real)
        wrong_and_low = (scores.components["correctness"] == 0) & (scores.components["beam_score"] < 0.2)
        assert (keep == real & ~wrong_and_low).all() and wrong_and_low.any()
    finally:
        rce.num_candidates, rce.drop_incorrect_below = 5, None


def test_rce_step_on_file_candidates(lever_ctx):
    ctx, task = lever_ctx
    opt = torch.optim.SGD(ctx.policy.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    metrics = rce_step(ctx, list(task.train[:4]), opt, sched)
    assert {"rce/loss", "rce/reward", "rce/reward/beam_score", "rce/reward/correctness", "rce/kept_frac"} <= set(
        metrics
    )
    assert metrics["rce/kept_frac"] == 1.0 and torch.isfinite(torch.tensor(metrics["rce/loss"]))
