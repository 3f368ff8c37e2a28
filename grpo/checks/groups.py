"""The range rules of the original config groups, one function per group (grpo/checks/__init__.py runs them)."""

from __future__ import annotations

import math
from collections.abc import Callable

from grpo.algorithms.names import ADVANTAGE_ESTIMATORS as ADV_ESTIMATORS
from grpo.algorithms.names import (
    AGGREGATION_MODES,
    IS_CORRECTIONS,
    KL_CONTROLLERS,
    LOSS_AGG_MODES,
    OPTIMIZERS,
    RATIO_LEVELS,
    ROLLOUT_ENGINES,
    SCALE_REWARDS,
    VLLM_SYNC_MODES,
)
from grpo.algorithms.names import KL_ESTIMATORS as _KL
from grpo.algorithms.names import KL_VERL_ALIASES as _VERL_ALIASES
from grpo.checks.rules import at_least as _at_least
from grpo.checks.rules import one_of as _one_of
from grpo.checks.rules import positive as _positive
from grpo.checks.rules import require as _require
from grpo.config.errors import ConfigError
from grpo.config.schema import RunConfig
from grpo.rewards.components import COMPONENTS, resolve
from grpo.rewards.tiered import RULES as TIER_RULES
from grpo.schedules import LR_DECAYS as LR_SCHEDULERS
from grpo.tasks import jsonl
from grpo.tasks.candidates import load_candidates

KL_ESTIMATORS = (*_KL, *_VERL_ALIASES)
ARCHITECTURES = ("qwen2", "llama")
LOGGER_BACKENDS = ("mlflow", "none")
REWARD_TYPES = ("weighted", "lever", "tiered")
RCE_CANDIDATES = ("policy", "task", "file")
QUALITY_SOURCES = ("policy", "file")
MIXED_PRECISION = ("no", "bf16", "fp16")


def check_generation(cfg: RunConfig) -> None:
    g = cfg.generation
    _at_least("generation.temperature", g.temperature, 0, " (0 samples greedily)")
    _require(0 < g.top_p <= 1, "generation.top_p", g.top_p, "must be in (0, 1]")
    _at_least("generation.top_k", g.top_k, 0, " (0 disables top-k)")
    _at_least("generation.max_new_tokens", g.max_new_tokens, 1)


def check_rollout(cfg: RunConfig, grpo_steps: int) -> None:
    r = cfg.rollout
    _at_least("rollout.batch_size", r.batch_size, 1)
    if grpo_steps > 0:
        _at_least("rollout.group_size", r.group_size, 2, " for GRPO: advantages compare completions of one prompt")
    _one_of("rollout.engine", r.engine, ROLLOUT_ENGINES)
    _one_of("rollout.sync", r.sync, VLLM_SYNC_MODES)
    _one_of("rollout.is_correction", r.is_correction, IS_CORRECTIONS)
    _positive("rollout.is_cap", r.is_cap)
    _require(
        0 < r.gpu_memory_utilization <= 1,
        "rollout.gpu_memory_utilization",
        r.gpu_memory_utilization,
        "must be in (0, 1]",
    )
    _at_least("rollout.tensor_parallel_size", r.tensor_parallel_size, 1)
    for key in ("max_model_len", "max_num_batched_tokens"):
        if getattr(r, key) is not None:
            _at_least(f"rollout.{key}", getattr(r, key), 1, " (null: the engine's default)")
    _positive("rollout.server_timeout", r.server_timeout)
    _at_least("rollout.server_retries", r.server_retries, 1)
    _require(
        r.server_url.startswith(("http://", "https://")),
        "rollout.server_url",
        r.server_url,
        "must be an http:// or https:// URL of a vLLM OpenAI-compatible server",
    )
    if r.engine == "vllm_server":
        _require(
            cfg.lora.enabled,
            "rollout.engine",
            r.engine,
            "a server takes the policy as a LoRA adapter only (/v1/load_lora_adapter); "
            "full fine-tuning (lora=none) needs rollout.engine=vllm",
        )
        _require(
            r.sync == "adapter",
            "rollout.sync",
            r.sync,
            "a server loads adapters; merged weights are pushed only into rollout.engine=vllm",
        )
        _require(
            r.server_model is not None or cfg.model.name_or_path is not None,
            "rollout.server_model",
            r.server_model,
            "the server needs the run's weights on disk: set model.name_or_path=DIR (the directory the server "
            "serves) or rollout.server_model=NAME",
        )


def check_lora(cfg: RunConfig) -> None:
    lora = cfg.lora
    if not lora.enabled:
        return
    _at_least("lora.rank", lora.rank, 1)
    _positive("lora.alpha", lora.alpha)
    _require(0 <= lora.dropout < 1, "lora.dropout", lora.dropout, "must be in [0, 1)")
    _require(len(lora.target_modules) > 0, "lora.target_modules", lora.target_modules, "must name at least one module")


def check_schedule(cfg: RunConfig, grpo_steps: int, warmup_steps: int) -> None:
    s = cfg.schedule
    _positive("schedule.rce_lr", s.rce_lr)
    _positive("schedule.grpo_lr", s.grpo_lr)
    _at_least("schedule.rce_epochs", s.rce_epochs, 0)
    if s.rce_steps is not None:
        _at_least("schedule.rce_steps", s.rce_steps, 0)
    _require(0 <= s.warmup_ratio < 1, "schedule.warmup_ratio", s.warmup_ratio, "must be in [0, 1)")
    _one_of("schedule.lr_scheduler", s.lr_scheduler, LR_SCHEDULERS)
    _require(0 <= s.min_lr_ratio <= 1, "schedule.min_lr_ratio", s.min_lr_ratio, "must be in [0, 1]")
    if grpo_steps > 0:
        _require(
            warmup_steps <= grpo_steps,
            "schedule.warmup_steps",
            warmup_steps,
            f"warm-up must not be longer than the run ({grpo_steps} GRPO steps)",
        )
    if s.temperature.enabled:
        _at_least("schedule.temperature.initial", s.temperature.initial, 0)
        _at_least("schedule.temperature.final", s.temperature.final, 0)
        _at_least("schedule.temperature.decay_steps", s.temperature.decay_steps, 1)


def check_algorithm(cfg: RunConfig) -> None:
    a = cfg.algorithm
    _one_of("algorithm.adv_estimator", a.adv_estimator, ADV_ESTIMATORS)
    _one_of("algorithm.scale_rewards", a.scale_rewards, SCALE_REWARDS)
    _one_of("algorithm.loss_agg", a.loss_agg, LOSS_AGG_MODES)
    _one_of("algorithm.kl_estimator", a.kl_estimator, KL_ESTIMATORS)
    _at_least("algorithm.kl_beta", a.kl_beta, 0)
    _positive("algorithm.clip_range", a.clip_range)
    if a.clip_range_high is not None:
        _positive("algorithm.clip_range_high", a.clip_range_high)
    _positive("algorithm.adv_eps", a.adv_eps)
    if a.dual_clip is not None:
        _require(a.dual_clip > 1, "algorithm.dual_clip", a.dual_clip, "must be > 1")
    _at_least("algorithm.num_iterations", a.num_iterations, 1)
    _one_of("algorithm.ratio_level", a.ratio_level, RATIO_LEVELS)
    _one_of("algorithm.kl_ctrl", a.kl_ctrl, KL_CONTROLLERS)
    _positive("algorithm.kl_target", a.kl_target)
    _at_least("algorithm.kl_horizon", a.kl_horizon, 1)
    _at_least("algorithm.max_try_make_batch", a.max_try_make_batch, 1)
    _at_least("algorithm.entropy_coef", a.entropy_coef, 0)
    _require(
        0 < a.top_entropy_quantile <= 1, "algorithm.top_entropy_quantile", a.top_entropy_quantile, "must be in (0, 1]"
    )
    _one_of("algorithm.rce.candidates", a.rce.candidates, RCE_CANDIDATES)
    _at_least("algorithm.rce.num_candidates", a.rce.num_candidates, 1)
    _positive("algorithm.rce.tau", a.rce.tau)


def check_reward(cfg: RunConfig) -> None:
    """The reward's own settings: type, components, custom functions, tiers, code execution."""
    r = cfg.reward
    _one_of("reward.aggregation", r.aggregation, AGGREGATION_MODES)
    _one_of("reward.type", r.type, REWARD_TYPES)
    _at_least("reward.numeric_tolerance", r.numeric_tolerance, 0)
    for name, path in r.custom.items():
        try:
            resolve(name, dict(r.custom))
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(
                f"reward.custom.{name}",
                path,
                f"cannot import it ({type(exc).__name__}: {exc}); write package.module:function",
            ) from None
    for name in r.weights:
        _one_of(f"reward.weights.{name}", name, (*COMPONENTS, *r.custom))
    _require(
        len(r.tiers) == 5, "reward.tiers", list(r.tiers), "must list 5 values: tier 5 (perfect) down to tier 1 (wrong)"
    )
    _require(
        all(math.isfinite(v) for v in r.tiers) and all(a >= b for a, b in zip(r.tiers, r.tiers[1:])),
        "reward.tiers",
        list(r.tiers),
        "must be finite and descending (perfect first)",
    )
    _at_least("reward.near_tolerance", r.near_tolerance, 0)
    _require(
        len(r.tier_rules) == 4, "reward.tier_rules", list(r.tier_rules), "must name 4 rules, for tier 5 down to tier 2"
    )
    for name in r.tier_rules:
        _one_of("reward.tier_rules", name, TIER_RULES)
    _positive("reward.execution_timeout", r.execution_timeout)
    _at_least("reward.execution_memory_mb", r.execution_memory_mb, 64)
    _at_least("reward.execution_workers", r.execution_workers, 1)
    _one_of("reward.quality_source", r.quality_source, QUALITY_SOURCES)


def check_reward_needs(cfg: RunConfig) -> None:
    """What the Lever / offline-candidate options need from the other groups."""
    r, rce, t = cfg.reward, cfg.algorithm.rce, cfg.task
    if r.type == "lever" and r.quality_source == "file":
        _require(
            t.candidates_path is not None,
            "reward.quality_source",
            "file",
            "quality from the file needs task.candidates_path (the offline candidates with their scores)",
        )
    if r.type == "weighted" and "beam_score" in r.weights:
        _require(
            t.candidates_path is not None,
            "reward.weights.beam_score",
            r.weights["beam_score"],
            "the candidates' scores need task.candidates_path (the offline candidates file)",
        )
    if rce.candidates == "file":
        _require(t.candidates_path is not None, "algorithm.rce.candidates", "file", "needs task.candidates_path")
    if rce.drop_incorrect_below is not None:
        _require(
            r.type in ("lever", "tiered") or "correctness" in r.weights,
            "algorithm.rce.drop_incorrect_below",
            rce.drop_incorrect_below,
            "needs a 'correctness' reward (reward.type lever or tiered, or reward.weights.correctness)",
        )


def check_task(cfg: RunConfig, domains_of: Callable[[str], tuple[str, ...]] | None) -> None:
    t = cfg.task
    _at_least("task.train_size", t.train_size, 1)
    _at_least("task.val_size", t.val_size, 1)
    jsonl_domains = None
    if t.name in ("jsonl", "aflow"):  # the files exist and parse: a bad line stops the run here, naming file and line
        jsonl_domains = jsonl.validate(t)
    if t.candidates_path is not None:
        load_candidates(t.candidates_path)
    if not t.domain_ratios:
        return
    total = sum(t.domain_ratios.values())
    _require(
        abs(total - 1.0) < 1e-6,
        "task.domain_ratios",
        dict(t.domain_ratios),
        f"must sum to 1 (they sum to {total:g})",
    )
    for name, share in t.domain_ratios.items():
        _require(share >= 0, f"task.domain_ratios.{name}", share, "must be >= 0")
    if domains_of is None and jsonl_domains is None:
        return
    known = jsonl_domains if jsonl_domains is not None else domains_of(t.name)
    for name in t.domain_ratios:
        _require(
            name in known,
            f"task.domain_ratios.{name}",
            t.domain_ratios[name],
            f"task '{t.name}' has no domain '{name}' (its domains: {', '.join(known)})",
        )


def check_trainer(cfg: RunConfig) -> None:
    tr = cfg.trainer
    if tr.max_steps is None:
        _require(
            cfg.schedule.grpo_epochs is not None,
            "trainer.max_steps",
            None,
            "set trainer.max_steps or schedule.grpo_epochs",
        )
    else:
        _at_least("trainer.max_steps", tr.max_steps, 0)
    _at_least("trainer.gradient_accumulation_steps", tr.gradient_accumulation_steps, 1)
    _positive("trainer.max_grad_norm", tr.max_grad_norm)
    _at_least("trainer.save_every", tr.save_every, 0)
    if tr.save_limit is not None:
        _at_least("trainer.save_limit", tr.save_limit, 1)
    _at_least("trainer.max_bad_steps", tr.max_bad_steps, 1)
    _one_of("trainer.mixed_precision", tr.mixed_precision, MIXED_PRECISION)
    _one_of("trainer.optim.name", tr.optim.name, OPTIMIZERS)
    _at_least("trainer.optim.weight_decay", tr.optim.weight_decay, 0)
    _at_least("trainer.optim.momentum", tr.optim.momentum, 0)


def check_eval(cfg: RunConfig) -> None:
    ev, es = cfg.eval, cfg.eval.early_stopping
    _one_of("eval.early_stopping.mode", es.mode, ("max", "min"))
    _at_least("eval.early_stopping.patience", es.patience, 1)
    _at_least("eval.early_stopping.min_delta", es.min_delta, 0)
    _at_least("eval.eval_every", ev.eval_every, 0)
    _at_least("eval.num_samples", ev.num_samples, 1)
    _require(
        ev.num_samples <= cfg.task.val_size,
        "eval.num_samples",
        ev.num_samples,
        f"must be <= task.val_size ({cfg.task.val_size}), the held-out prompts there are",
    )
    _at_least("eval.batch_size", ev.batch_size, 1)
    _at_least("eval.generation.n", ev.generation.n, 1)
    _require(
        ev.generation.n == 1 or not ev.generation.greedy,
        "eval.generation.n",
        ev.generation.n,
        "greedy decoding gives n identical samples; set eval.generation.greedy=false for n > 1",
    )


def check_logger(cfg: RunConfig) -> None:
    _one_of("logger.backend", cfg.logger.backend, LOGGER_BACKENDS)
    _at_least("logger.log_every", cfg.logger.log_every, 1)
