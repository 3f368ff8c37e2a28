"""The published recipes as `algorithm=` presets: their values, and one real training step each."""

import pytest

from grpo.compose import compose
from grpo.recipe import Recipe

PUBLISHED = {
    "grpo": dict(
        adv_estimator="grpo", scale_rewards="group", loss_agg="seq-mean-token-mean", kl_beta=0.04, kl_estimator="k3"
    ),
    "dr_grpo": dict(scale_rewards="none", loss_agg="seq-mean-token-sum-norm", kl_beta=0.0),
    "dapo": dict(
        clip_range=0.2,
        clip_range_high=0.28,
        loss_agg="token-mean",
        kl_beta=0.0,
        dynamic_sampling=True,
        mask_truncated=True,
    ),
    "gspo": dict(ratio_level="sequence", clip_range=3e-4, clip_range_high=4e-4, kl_beta=0.0),
    "rloo": dict(adv_estimator="rloo", scale_rewards="none"),
    "easyr1": dict(
        use_kl_loss=True, kl_estimator="low_var_kl", kl_beta=1.0e-2, dynamic_sampling=False, max_try_make_batch=20
    ),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_values(name):
    algo = compose([f"algorithm={name}"]).cfg.algorithm
    assert algo.name == name
    for key, value in PUBLISHED[name].items():
        assert getattr(algo, key) == pytest.approx(value), key


SMALL = [
    "task=numgame",
    "schedule.rce_steps=0",
    "trainer.max_steps=2",
    "rollout.batch_size=4",
    "rollout.group_size=4",
    "generation.max_new_tokens=3",
    "eval.num_samples=4",
    "logger=none",
]


@pytest.mark.parametrize(
    "overrides",
    [
        ["algorithm=grpo"],
        ["algorithm=dr_grpo"],
        ["algorithm=dapo"],
        ["algorithm=gspo"],
        ["algorithm=rloo"],
        ["algorithm=easyr1"],
        ["algorithm.use_kl_loss=false", "algorithm.kl_ctrl=adaptive"],  # KL as a reward penalty, adaptive beta
        ["algorithm.num_iterations=2", "algorithm.dual_clip=3.0"],  # PPO epochs with old log-probs from the rollout
        ["algorithm.entropy_coef=0.01", "algorithm.top_entropy_quantile=0.5"],
        ["reward=weighted", "reward.aggregation=normalize_then_sum"],
    ],
    ids=lambda o: " ".join(o),
)
def test_one_real_step_per_variant(tmp_path, overrides):
    recipe = Recipe(compose([*SMALL, *overrides]), run_dir=str(tmp_path), tags={})
    recipe.setup()
    metrics = recipe.train()
    recipe.cleanup()
    assert 0.0 <= metrics["val/accuracy"] <= 1.0
    assert (tmp_path / "checkpoints" / "step_2" / "trainer_state.json").exists()


def test_dynamic_sampling_refills_until_groups_carry_a_signal(tmp_path):
    """With a random policy nearly every group is all-wrong: DAPO's filter must refill and say so."""
    recipe = Recipe(
        compose([*SMALL, "algorithm=dapo", "trainer.max_steps=1", "algorithm.max_try_make_batch=3"]),
        run_dir=str(tmp_path),
        tags={},
    )
    recipe.setup()
    recipe.train()
    recipe.cleanup()
    rows = [__import__("json").loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in rows if "train/dynamic_sampling/tries" in r)
    assert 1 <= step["train/dynamic_sampling/tries"] <= 3
    assert 0.0 <= step["train/dynamic_sampling/kept_frac"] <= 1.0
