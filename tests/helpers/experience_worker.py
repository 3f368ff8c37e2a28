"""One rank of a real 2-process gloo group (started by torchrun): offers its own rows to the experience
buffer through the GRPO step's `remember` and writes the buffer it ends with to OUT/rank{R}.json.

argv: OUT. Each rank holds different prompts (its share of a global batch), as under `accelerate launch`.
"""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from accelerate import Accelerator

from grpo.rollout.experience import ExperienceBuffer
from grpo.stages.replay import remember

ROWS = {  # (prompt, completion, reward) per rank; rank 1's rows would evict rank 0's if added first
    0: [("p0", "a", 1.0), ("p0", "b", 0.0), ("p2", "c", 0.5)],
    1: [("p1", "d", 0.7), ("p3", "e", 0.9), ("p3", "f", 0.2)],
}

if __name__ == "__main__":
    out = Path(sys.argv[1])
    acc = Accelerator(cpu=True)
    ctx = SimpleNamespace(accelerator=acc, experience=ExperienceBuffer(buffer_size=3, min_reward=0.0, per_prompt=1))
    remember(ctx, *map(list, zip(*ROWS[acc.process_index])))
    (out / f"rank{acc.process_index}.json").write_text(json.dumps(ctx.experience.state_dict()))
    torch.distributed.destroy_process_group()  # a gloo group left to interpreter exit can abort the process
