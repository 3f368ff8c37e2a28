"""trainer.parallel and what it needs: the strategy's name, and the precisions FSDP2 runs in."""

from __future__ import annotations

from grpo.algorithms.names import PARALLEL_STRATEGIES
from grpo.checks.rules import one_of, require
from grpo.config.schema import RunConfig


def check_parallel(cfg: RunConfig) -> None:
    tr = cfg.trainer
    one_of("trainer.parallel", tr.parallel, PARALLEL_STRATEGIES)
    if tr.parallel == "fsdp":
        require(
            tr.mixed_precision != "fp16",
            "trainer.mixed_precision",
            tr.mixed_precision,
            "fp16 needs a sharded loss scaler, which trainer.parallel=fsdp does not run: use bf16 (or no)",
        )
