"""Domain mixing per batch (grpo/tasks/mixing.py): shares hold exactly, not only on average."""

from __future__ import annotations

from collections import Counter

import pytest

from grpo.config.schema import TaskConfig
from grpo.tasks.base import Example
from grpo.tasks.mixing import BatchSampler, apportion
from grpo.tasks.registry import build_task

RATIOS = {"math": 0.4, "qa": 0.3, "code": 0.3}


def pool(sizes: dict[str, int]) -> list[Example]:
    return [Example(prompt=f"{d}{i}", answer="0", domain=d) for d, n in sizes.items() for i in range(n)]


@pytest.mark.parametrize("batch_size", [4, 7, 10, 32])
def test_ratios_hold_over_10000_samples(batch_size):
    sampler = BatchSampler(pool({"math": 50, "qa": 13, "code": 7}), RATIOS, seed=0)
    counts: Counter = Counter()
    drawn = 0
    while drawn < 10_000:
        batch = sampler.next_batch(batch_size)
        assert len(batch) == batch_size
        counts.update(ex.domain for ex in batch)
        drawn += batch_size
        for d, r in RATIOS.items():  # exact: every domain is within one sample of its share at every step
            assert abs(counts[d] - r * drawn) < 1
    for d, r in RATIOS.items():  # the criterion: within 1 % over 10,000 samples
        assert abs(counts[d] / drawn - r) < 0.01


def test_per_batch_counts():
    carry: dict[str, float] = {}
    seen = [apportion(10, RATIOS, carry) for _ in range(3)]
    assert seen == [{"math": 4, "qa": 3, "code": 3}] * 3  # divisible: the same counts every batch
    carry = {}
    counts = [apportion(4, RATIOS, carry) for _ in range(5)]  # 4 x (0.4, 0.3, 0.3) = 1.6 / 1.2 / 1.2 per batch
    assert all(sum(c.values()) == 4 for c in counts)
    assert [sum(c[d] for c in counts) for d in RATIOS] == [8, 6, 6]  # 20 samples: exactly 8 / 6 / 6
    for c in counts:
        for d, r in RATIOS.items():
            assert abs(c[d] - 4 * r) < 2


def test_each_domain_is_walked_without_repeats_before_reshuffling():
    sampler = BatchSampler(pool({"math": 4, "qa": 3, "code": 3}), RATIOS, seed=1)
    first = [ex.prompt for ex in sampler.next_batch(10)]
    assert len(set(first)) == 10  # one batch = one pass over every domain here


def test_zero_ratio_domains_are_never_drawn_and_sampling_is_seeded():
    a = BatchSampler(pool({"math": 5, "qa": 5, "code": 5}), {"math": 0.5, "qa": 0.5, "code": 0.0}, seed=3)
    b = BatchSampler(pool({"math": 5, "qa": 5, "code": 5}), {"math": 0.5, "qa": 0.5, "code": 0.0}, seed=3)
    batches = [[ex.prompt for ex in a.next_batch(6)] for _ in range(20)]
    assert not any(p.startswith("code") for batch in batches for p in batch)
    assert batches == [[ex.prompt for ex in b.next_batch(6)] for _ in range(20)]


def test_mixing_a_jsonl_task():
    cfg = TaskConfig(
        name="jsonl",
        train_path="experiments/data/aflow/train.jsonl",
        val_path="experiments/data/aflow/val.jsonl",
        train_size=60,
        domain_ratios=RATIOS,
    )
    task = build_task(cfg)
    sampler = BatchSampler(task.train, cfg.domain_ratios, seed=7)
    counts = Counter(ex.domain for _ in range(2500) for ex in sampler.next_batch(4))
    assert counts == {"math": 4000, "qa": 3000, "code": 3000}
