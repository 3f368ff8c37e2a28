"""One seed is one run's randomness: `seed` derives the model's init and the data order (and seeds
sampling), the task's generator keeps its own seed so the held-out prompts stay fixed, and the
same seed repeats a run exactly. Short real runs of numgame_tiny, in-process."""

import copy
import json

import pytest
import torch

from grpo.compose import compose
from grpo.config.derived import sub_seed
from grpo.run_report import seeds_line

# numgame_tiny, shrunk: 12 RCE steps (the answer space, which draws nothing), 2 GRPO steps.
SHORT = [
    "+experiment=numgame_tiny",
    "logger=none",
    "trainer.resume=never",
    "trainer.threads=1",
    "trainer.save_every=0",
    "schedule.rce_steps=12",
    "trainer.max_steps=2",
    "rollout.batch_size=8",
    "rollout.group_size=4",
    "task.train_size=64",
    "eval.eval_every=6",
    "eval.num_samples=16",
    "logger.log_every=1",
]


def test_seed_derives_the_init_and_the_data_order_not_the_prompts():
    a, b = compose(["seed=0"]), compose(["seed=1"])
    assert a.derived.model_init_seed != b.derived.model_init_seed
    assert a.derived.data_seed != b.derived.data_seed
    assert a.derived.model_init_seed != a.derived.data_seed  # separate streams, not one seed reused
    assert a.derived.model_init_seed == sub_seed(0, "model.init")  # computed, the same on every machine
    assert compose(["seed=0"]).derived == a.derived
    # An explicit init seed still wins; the generator's seed stays out of the run's seeds.
    assert compose(["seed=1", "model.init_seed=7"]).derived.model_init_seed == 7
    moved = compose(["seed=0", "task.seed=99"]).derived
    assert (moved.model_init_seed, moved.data_seed) == (a.derived.model_init_seed, a.derived.data_seed)
    assert a.cfg.task.seed == b.cfg.task.seed == 1234


def test_derived_seeds_are_params_and_show_in_diff():
    from grpo.diff import diff_rows

    params = compose(["seed=3"]).derived.as_params()
    assert {"derived.model_init_seed", "derived.data_seed"} <= set(params)
    keys = [r.key for r in diff_rows([compose(["seed=0"]), compose(["seed=1"])])]
    assert keys == ["seed", "derived.model_init_seed", "derived.data_seed"]


def test_header_names_what_stays_fixed():
    line = seeds_line(compose(["seed=5"]))
    derived = compose(["seed=5"]).derived
    assert f"model init {derived.model_init_seed}" in line and f"data order {derived.data_seed}" in line
    assert "sampling 5 + rank" in line and "fixed: task.seed=1234" in line
    pinned = seeds_line(compose(["seed=5", "model.init_seed=0"]))
    assert "model init" not in pinned.split("fixed:")[0] and "model.init_seed=0 (the model's init)" in pinned


def short_run(tmp_path, seed: int) -> tuple[torch.Tensor, list[str], list[dict]]:
    """(the initial weights of the first layer, the first batch's prompts, every logged metric row)."""
    from grpo.recipe import Recipe

    comp = compose([*SHORT, f"seed={seed}", f"trainer.output_dir={tmp_path}"])
    recipe = Recipe(comp, run_dir=str(tmp_path), tags={})
    recipe.setup()
    first = next(recipe.ctx.policy.parameters()).detach().clone()
    prompts = [ex.prompt for ex in copy.deepcopy(recipe.sampler).next_batch(8)]  # the run's own sampler untouched
    try:
        recipe.train()
    finally:
        recipe.cleanup()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return first, prompts, [{k: v for k, v in r.items() if not timing(k)} for r in rows]


def timing(metric: str) -> bool:
    """Wall-clock metrics (step time, tokens/s, phases): the only ones allowed to differ."""
    return "time" in metric or metric.endswith("per_s")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return {
        name: short_run(tmp_path_factory.mktemp(name), seed)
        for name, seed in (("seed0", 0), ("seed0_again", 0), ("seed1", 1))
    }


def curve(rows: list[dict], metric: str) -> list[float]:
    return [r[metric] for r in rows if metric in r]


def test_seed_changes_the_model_init_the_data_order_and_the_rce_curve(runs):
    (w0, p0, rows0), (w1, p1, rows1) = runs["seed0"], runs["seed1"]
    assert not torch.equal(w0, w1)
    assert p0 != p1
    assert curve(rows0, "rce/loss") != curve(rows1, "rce/loss")
    assert len(curve(rows0, "rce/loss")) == 12


def test_the_same_seed_repeats_exactly(runs):
    (w0, p0, rows0), (w0b, p0b, rows0b) = runs["seed0"], runs["seed0_again"]
    assert torch.equal(w0, w0b) and p0 == p0b
    assert rows0 == rows0b  # every loss, reward and validation, RCE and GRPO, bit for bit
    assert curve(rows0, "train/reward") and curve(rows0, "val/accuracy")
