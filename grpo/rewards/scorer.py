"""Scores completions with the configured components and combines them into one reward."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from grpo.algorithms.rewards_agg import combine_rewards
from grpo.config.schema import RewardConfig
from grpo.rewards.components import resolve
from grpo.rewards.executor import ExecutorClient, ExecutorStats

log = logging.getLogger(__name__)


@dataclass
class Scores:
    total: torch.Tensor  # [N]
    components: dict[str, torch.Tensor]  # name -> [N], raw (unweighted)
    errors: int  # completions whose reward raised (scored 0)

    def select(self, rows: torch.Tensor) -> Scores:
        return Scores(self.total[rows], {k: v[rows] for k, v in self.components.items()}, self.errors)

    @staticmethod
    def concat(parts: list[Scores]) -> Scores:
        return Scores(
            torch.cat([p.total for p in parts]),
            {k: torch.cat([p.components[k] for p in parts]) for k in parts[0].components},
            sum(p.errors for p in parts),
        )


CACHE_FILE = "executor_cache.sqlite"  # in the run's output directory unless reward.executor.cache_path names one


class RewardScorer:
    """Runs the components and combines them. When one of them calls the executor LLM
    (`fn.needs_executor`), the scorer holds the one `ExecutorClient` of the run and passes it as
    `executor=`; its cache lives in `output_dir` unless `reward.executor.cache_path` is set."""

    def __init__(self, cfg: RewardConfig, output_dir: str | None = None):
        if cfg.type == "lever":
            # quality: the policy's confidence, or the candidate's score in the offline file (beam_score)
            quality = "beam_score" if cfg.quality_source == "file" else "quality"
            self.weights = {quality: cfg.alpha, "correctness": cfg.beta}
        elif cfg.type == "tiered":
            self.weights = {"tiered": 1.0, "correctness": 0.0}  # correctness: weight 0, logged for reference
        else:
            self.weights = dict(cfg.weights)
        self.options = {
            "numeric_tolerance": cfg.numeric_tolerance,
            "tiers": list(cfg.tiers),
            "near_tolerance": cfg.near_tolerance,
            "tier_rules": cfg.tier_rules,  # the tiered reward's rules (grpo/rewards/tiered.py)
            "partial_overlap": cfg.partial_overlap,
            "code_near_fraction": cfg.code_near_fraction,
            "execution_timeout": cfg.execution_timeout,
            "execution_memory_mb": cfg.execution_memory_mb,
            "execution_workers": cfg.execution_workers,
            "patch_indentation": cfg.patch_indentation,
        }
        self.errors_seen: set[str] = set()
        self.aggregation = cfg.aggregation
        self.functions = {name: resolve(name, dict(cfg.custom)) for name in self.weights}
        self.executor: ExecutorClient | None = None
        if any(getattr(fn, "needs_executor", False) for fn in self.functions.values()):
            cache = os.path.join(output_dir, CACHE_FILE) if output_dir else None
            self.executor = ExecutorClient(cfg.executor, cache)
            self.options.update(executor=self.executor, judge=cfg.judge)

    @property
    def needs_logp(self) -> bool:
        """Lever's quality is the policy's confidence: the caller must supply log-probs."""
        return "quality" in self.weights

    def drain_stats(self) -> ExecutorStats | None:
        """The executor's use since the last drain (this process's); None when no component calls it.
        The stages sum it over processes (stages/scoring.executor_metrics)."""
        return self.executor.drain_stats() if self.executor is not None else None

    def drain_metrics(self) -> dict[str, float]:
        """This process's drain as metrics (reward/executor_calls, _tokens, _cache_hit_rate, _failures,
        _retries, and its callers' counts): always those five keys when a component calls the
        executor, none when not."""
        stats = self.drain_stats()
        return stats.metrics() if stats is not None else {}

    def _run(self, name: str, prompts: list[str], completions: list[str], columns: dict) -> tuple[list[float], int]:
        fn = self.functions[name]
        try:
            return [float(v) for v in fn(prompts, completions, **columns, **self.options)], 0
        except Exception:  # one bad completion must not take the batch (or the run) down
            values, errors = [], 0
            for i in range(len(completions)):
                row = {k: [v[i]] for k, v in columns.items()}
                try:
                    values.append(float(fn([prompts[i]], [completions[i]], **row, **self.options)[0]))
                except Exception as exc:  # noqa: BLE001 - any reward failure scores 0
                    values.append(0.0)
                    errors += 1
                    key = f"{name}:{type(exc).__name__}"
                    if key not in self.errors_seen:
                        self.errors_seen.add(key)
                        log.warning(
                            "reward '%s' raised %s: %s "
                            "(scored 0; further errors of this kind are counted, not printed)",
                            name,
                            type(exc).__name__,
                            exc,
                        )
            return values, errors

    def __call__(self, prompts: list[str], completions: list[str], group_size: int | None = None, **columns) -> Scores:
        components, errors = {}, 0
        for name in self.weights:
            values, n_err = self._run(name, prompts, completions, columns)
            components[name] = torch.tensor(values, dtype=torch.float32)
            errors += n_err
        if self.aggregation == "normalize_then_sum" and group_size:  # each component normalised in its group first
            total = combine_rewards(components, self.weights, mode="normalize_then_sum", group_size=group_size)
        else:
            total = sum((w * components[n] for n, w in self.weights.items()), torch.zeros(len(completions)))
        return Scores(total=total, components=components, errors=errors)
