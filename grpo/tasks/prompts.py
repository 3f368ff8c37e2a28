"""The seam where the prompts the policy samples from are built, and learn from scored rollouts.

The stages never read `example.prompt` to sample: they ask `ctx.prompts.for_sampling(examples)`.
What comes back is scored (stages/scoring.score, every RCE and GRPO step) and recorded here
(`record`); at the end of the step the stage gathers every process's records in rank order and
hands them to `observe` on every process (stages/scoring.share_observed), so every rank builds the
same prompts. `state_dict` / `load_state_dict` carry what was learned across a checkpoint. The
plain builder gives the task's prompt as it is and learns nothing; a task whose prompt carries more
(AFlow's operator descriptions and best workflows so far: grpo/tasks/aflow.py) subclasses it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from grpo.tasks.base import Example

Observed = tuple[Example, str, float]  # one scored row: its example, the completion, the reward


class Prompts:
    """The task's prompts as they are."""

    learns = False  # whether observe changes anything (the scored rows are recorded, gathered, shown)

    def __init__(self) -> None:
        self.pending: list[Observed] = []  # recorded this step, not yet observed

    def for_sampling(self, examples: Sequence[Example]) -> list[str]:
        return [self.build(ex) for ex in examples]

    def build(self, example: Example) -> str:
        return example.prompt

    def record(self, examples: Sequence[Example], completions: Sequence[str], rewards: Sequence[float], repeats: int):
        """Keep scored rows (each example's `repeats` completions in a row) for the step's `observe`."""
        if self.learns:
            rows = [ex for ex in examples for _ in range(repeats)]
            self.pending += [(ex, c, float(r)) for ex, c, r in zip(rows, completions, rewards)]

    def take_pending(self) -> list[Observed]:
        rows, self.pending = self.pending, []
        return rows

    def observe(self, examples: Sequence[Example], completions: Sequence[str], rewards: Sequence[float], repeats: int):
        """Scored rows, each example's `repeats` completions in a row. The plain prompts ignore them."""

    def limit(self, max_tokens: int, count: Callable[[str], int]) -> None:
        """The longest prompt the model's context leaves room for (`count`: a text's tokens). Plain
        prompts are fixed, and the run's generation budget was computed from them already."""

    def state_dict(self) -> dict:
        """What was learned from scored rows, as plain data (checkpointed with the run)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict`'s data (the plain prompts hold none)."""
