"""Training batches drawn from a task's train split, domains mixed by ratio.

Each domain is walked in a shuffled order, reshuffled at every pass (an epoch per domain).
The number of prompts per domain in a batch is apportioned from the ratios with carried
remainders, so over many batches every domain's share is exact, not just expected.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from grpo.tasks.base import Example


def apportion(batch_size: int, ratios: Mapping[str, float], carry: dict[str, float]) -> dict[str, int]:
    """Counts per domain summing to batch_size; `carry` keeps each domain's unpaid fraction."""
    wanted = {d: batch_size * r + carry.get(d, 0.0) for d, r in ratios.items()}
    counts = {d: int(w) for d, w in wanted.items()}
    # Hand the seats left over to the largest remainders (ties: domain order).
    left = batch_size - sum(counts.values())
    for d in sorted(wanted, key=lambda d: wanted[d] - counts[d], reverse=True)[: max(left, 0)]:
        counts[d] += 1
    for d in wanted:
        carry[d] = wanted[d] - counts[d]
    return counts


class BatchSampler:
    def __init__(self, examples: Sequence[Example], ratios: Mapping[str, float] | None, seed: int):
        self.by_domain: dict[str, list[Example]] = {}
        for ex in examples:
            self.by_domain.setdefault(ex.domain, []).append(ex)
        domains = sorted(self.by_domain)
        self.ratios = dict(ratios) if ratios else {d: 1.0 / len(domains) for d in domains}
        self.ratios = {d: r for d, r in self.ratios.items() if r > 0}
        self.rng = random.Random(seed)
        self.order: dict[str, list[int]] = {d: [] for d in domains}
        self.carry: dict[str, float] = {}

    def _take(self, domain: str) -> Example:
        if not self.order[domain]:
            order = list(range(len(self.by_domain[domain])))
            self.rng.shuffle(order)
            self.order[domain] = order
        return self.by_domain[domain][self.order[domain].pop()]

    def next_batch(self, batch_size: int) -> list[Example]:
        counts = apportion(batch_size, self.ratios, self.carry)
        batch = [self._take(d) for d in sorted(counts) for _ in range(counts[d])]
        self.rng.shuffle(batch)
        return batch

    def state_dict(self) -> dict:
        return {
            "rng": self.rng.getstate(),
            "order": {d: list(o) for d, o in self.order.items()},
            "carry": dict(self.carry),
        }

    def load_state_dict(self, state: dict) -> None:
        rng_state = state["rng"]
        self.rng.setstate((rng_state[0], tuple(rng_state[1]), rng_state[2]))
        self.order = {d: list(o) for d, o in state["order"].items()}
        self.carry = dict(state["carry"])
