"""One rank of a real 2-process gloo group (started by torchrun): records its own scored rows into
AFlow's prompts and drains its own executor stats, then runs the step's `share_observed` and
`executor_metrics` and writes what it ends with to OUT/rank{R}.json.

argv: OUT. Each rank holds different rows and stats (its share of a global batch), as under
`accelerate launch`.
"""

import json
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import torch
from accelerate import Accelerator

from grpo.rewards.executor import ExecutorStats
from grpo.stages.scoring import executor_metrics, share_observed
from grpo.tasks.aflow import WorkflowPrompts
from grpo.tasks.base import Example

MATH, QA = Example("2+2", "4", "math"), Example("capital?", "Paris", "qa")
ROWS = {  # (example, workflow, reward) per rank; rank 1's math workflow outranks rank 0's
    0: [(MATH, "wf-a", 0.5), (MATH, "wf-zero", 0.0), (QA, "wf-q", 0.3)],
    1: [(MATH, "wf-b", 0.9), (MATH, "wf-a", 0.6)],
}
STATS = {
    0: ExecutorStats(
        requests=4,
        calls=3,
        cache_hits=1,
        prompt_tokens=24,
        completion_tokens=6,
        cost_usd=0.25,
        counts=Counter({"aflow_runs/ok": 2}),
    ),
    1: ExecutorStats(
        requests=2, calls=0, cache_hits=2, failures=1, cost_usd=0.0, counts=Counter({"aflow_invalid/syntax": 1})
    ),
}
TOTALS = {"calls": 10.0, "tokens": 100.0, "cost_usd": 1.0}  # the run's totals so far, as a checkpoint restores them


class Scorer:  # a scorer whose executor saw this rank's stats
    def __init__(self, stats: ExecutorStats):
        self.stats = stats

    def drain_stats(self) -> ExecutorStats:
        return self.stats


if __name__ == "__main__":
    out = Path(sys.argv[1])
    acc = Accelerator(cpu=True)
    rank = acc.process_index
    prompts = WorkflowPrompts(None, num_examples=2)
    examples, completions, rewards = zip(*ROWS[rank])
    prompts.record(list(examples), list(completions), list(rewards), 1)
    ctx = SimpleNamespace(accelerator=acc, prompts=prompts, scorer=Scorer(STATS[rank]), executor_totals=dict(TOTALS))
    share_observed(ctx)
    result = {"prompts": prompts.state_dict(), "metrics": executor_metrics(ctx), "pending": len(prompts.pending)}
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    torch.distributed.destroy_process_group()  # a gloo group left to interpreter exit can abort the process
