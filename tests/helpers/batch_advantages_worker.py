"""One rank of a real 2-process gloo group (started by torchrun): its advantages to OUT/rank{R}.json.

argv: OUT ESTIMATOR SCALE_REWARDS; rewards per rank are fixed below (groups of 2, contiguous).
"""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from grpo.config.schema import AlgorithmConfig
from grpo.stages.grpo import batch_advantages

REWARDS = {0: [1.0, 0.0, 1.0, 1.0], 1: [0.0, 0.0, 3.0, 0.5, 2.0, 1.0]}  # rank 1 holds more rows (sizes may differ)

if __name__ == "__main__":
    out, estimator, scale = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    acc = Accelerator(cpu=True)
    adv = batch_advantages(
        acc, torch.tensor(REWARDS[acc.process_index]), 2, AlgorithmConfig(adv_estimator=estimator, scale_rewards=scale)
    )
    (out / f"rank{acc.process_index}.json").write_text(json.dumps(adv.tolist()))
    torch.distributed.destroy_process_group()  # a gloo group left to interpreter exit can abort the process
