"""A training run inside the test process, with each GRPO step's metrics and sample rows recorded."""

from __future__ import annotations

from pathlib import Path

import grpo.recipe as recipe_module
from grpo.compose import compose
from grpo.recipe import Recipe
from grpo.stages.grpo import grpo_step


def run(out: Path, *overrides: str) -> tuple[Recipe, dict[int, dict[str, float]], dict[int, list[dict]]]:
    """Train in-process; returns the recipe and each GRPO step's metrics and sample rows by global step."""
    recipe = Recipe(compose([*overrides, f"trainer.output_dir={out}"]), run_dir=str(out), tags={})
    metrics, samples = {}, {}

    def recorded(*args, **kwargs):
        m, s = grpo_step(*args, **kwargs)
        metrics[recipe.step], samples[recipe.step] = m, s
        return m, s

    recipe.setup()
    original = recipe_module.grpo_step
    recipe_module.grpo_step = recorded
    try:
        recipe.train()
    finally:
        recipe_module.grpo_step = original
        recipe.cleanup()
    return recipe, metrics, samples
