"""Wall time per phase of a step: the step's `time/*` metrics and `grpo.bench`'s phases read it.

The step wraps each phase (generation, reference forward, policy forward, backward, optimizer)
in `timer.phase(name)`; nothing outside the step patches its calls to time them. On a GPU the
bench passes `torch.cuda.synchronize` as `sync`, so a phase ends when its kernels do.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class StepTimer:
    def __init__(self, sync: Callable[[], None] | None = None):
        self.sync = sync or (lambda: None)
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def reset(self) -> None:
        self.seconds.clear()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the wall time of the block to `name` (phases may repeat within a step)."""
        self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.seconds[name] += time.perf_counter() - start

    def __getitem__(self, name: str) -> float:
        return self.seconds.get(name, 0.0)
