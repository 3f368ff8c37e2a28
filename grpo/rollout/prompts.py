"""The seam where the prompts the policy samples from are built, and learn from scored rollouts.

The stages never read `example.prompt` to sample: they ask `ctx.prompts.for_sampling(examples)`
and tell it what came back, `ctx.prompts.observe(examples, completions, rewards, repeats)` (from
stages/scoring.score, every RCE and GRPO step). The plain builder gives the task's prompt as it
is and forgets what it sees; a task whose prompt carries more (AFlow's operator descriptions and
best workflows so far: grpo/tasks/aflow.py) subclasses it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from grpo.tasks.base import Example


class Prompts:
    """The task's prompts as they are."""

    def for_sampling(self, examples: Sequence[Example]) -> list[str]:
        return [self.build(ex) for ex in examples]

    def build(self, example: Example) -> str:
        return example.prompt

    def observe(self, examples: Sequence[Example], completions: Sequence[str], rewards: Sequence[float], repeats: int):
        """Scored rows, each example's `repeats` completions in a row. The plain prompts ignore them."""

    def limit(self, max_tokens: int, count: Callable[[str], int]) -> None:
        """The longest prompt the model's context leaves room for (`count`: a text's tokens). Plain
        prompts are fixed, and the run's generation budget was computed from them already."""
