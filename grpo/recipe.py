"""The training recipe: setup -> RCE stage -> GRPO stage (with validation) -> close.

Each stage is a loop of steps from grpo.stages; this file wires the components together,
owns the optimizer of each stage, and decides when to log, evaluate and checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Optional

import torch
from tqdm.auto import tqdm

from grpo.checkpoint import save_checkpoint
from grpo.config.compose import Composition
from grpo.config.errors import ConfigError
from grpo.evaluate import evaluate
from grpo.models.load import context_length, load_model
from grpo.models.lora import apply_lora, reference_context
from grpo.optim import build_optimizer, build_scheduler
from grpo.report import header, summary
from grpo.rewards.model import RewardModel
from grpo.rollout.engine import HFGenerateEngine
from grpo.stages.common import RunContext
from grpo.stages.grpo import grpo_step
from grpo.stages.rce import rce_step
from grpo.tasks.mixing import BatchSampler
from grpo.tasks.registry import build_task
from grpo.tracking.base import Tracker, build_tracker

log = logging.getLogger("grpo")
ZERO_SPREAD_WARN = 0.5  # warn when more than half the groups carry no learning signal


class Recipe:
    def __init__(self, comp: Composition, run_dir: str, tags: dict[str, str], trial=None):
        self.comp, self.cfg, self.derived = comp, comp.cfg, comp.derived
        self.run_dir = run_dir
        self.tags = tags
        self.trial = trial  # optuna trial reporter (sweeps) or None
        self.history: list[dict[str, float]] = []
        self.final_metrics: dict[str, float] = {}
        self.checkpoints: list[str] = []
        self.step = 0  # global optimizer step: RCE steps, then GRPO steps

    # ---------------------------------------------------------------- setup
    def setup(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        cfg = self.cfg
        if cfg.trainer.threads:
            torch.set_num_threads(cfg.trainer.threads)
        cpu = cfg.trainer.device == "cpu" or (cfg.trainer.device == "auto" and not torch.cuda.is_available())
        self.accelerator = acc = Accelerator(cpu=cpu, mixed_precision=cfg.trainer.mixed_precision,
                                             gradient_accumulation_steps=cfg.trainer.gradient_accumulation_steps)
        # Samples differ across processes but the run is reproducible: seed + rank.
        set_seed(cfg.seed + acc.process_index)
        if cfg.rollout.batch_size % acc.num_processes:
            raise ConfigError("rollout.batch_size", cfg.rollout.batch_size,
                              f"prompts per step are split across processes: must be divisible by {acc.num_processes}")

        model, tokenizer = load_model(cfg.model)
        model = apply_lora(model, cfg.lora)
        need_ref = cfg.algorithm.use_kl_loss and cfg.algorithm.kl_beta > 0
        reference = reference_context(model, cfg.lora.enabled, need_ref)
        policy = acc.prepare(model)
        task = build_task(cfg.task)
        ctx_len = context_length(acc.unwrap_model(policy))
        longest_prompt = max(len(tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]) for ex in (*task.train, *task.val))
        max_new = max(1, min(cfg.generation.max_new_tokens, ctx_len - longest_prompt))
        self.ctx = RunContext(cfg=cfg, derived=self.derived, accelerator=acc, policy=policy, tokenizer=tokenizer,
                              engine=HFGenerateEngine(tokenizer), reward_model=RewardModel(cfg.reward), task=task,
                              reference=reference, max_new_tokens=max_new)
        self.sampler = BatchSampler(task.train, cfg.task.domain_ratios, seed=cfg.task.seed + 7)
        self.tracker: Tracker = build_tracker(cfg.logger, self.derived.run_name, self.tags) if acc.is_main_process else build_tracker_none()
        self.n_params = sum(p.numel() for p in policy.parameters())
        self.n_trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
        if acc.is_main_process:
            log.info(header(self.comp, run_dir=self.run_dir, max_new_tokens=max_new, context=ctx_len,
                            params=(self.n_trainable, self.n_params), tracker=self.tracker, task=task))
            self._log_config()

    def _log_config(self) -> None:
        from omegaconf import OmegaConf

        flat = flatten(OmegaConf.to_container(self.comp.raw, resolve=True))
        self.tracker.log_params({**flat, **self.derived.as_params()})
        self.tracker.log_text(OmegaConf.to_yaml(self.comp.raw, resolve=True), "config/config.yaml")
        overrides = self.tags.get("overrides", "")
        self.tracker.log_text(overrides + "\n", "config/overrides.txt")

    # ---------------------------------------------------------------- stages
    def train(self) -> dict[str, float]:
        t0 = time.perf_counter()
        if self.cfg.eval.before_train:
            self._evaluate(step=0)
        if self.derived.rce_steps > 0:
            self._run_rce()
        self._run_grpo()
        self.final_metrics["time/total"] = time.perf_counter() - t0
        self.tracker.log_metrics({"time/total": self.final_metrics["time/total"]}, self.step)
        return self.final_metrics

    def _optimizer(self, lr: float, steps: int, warmup: int):
        s = self.cfg.schedule
        opt = build_optimizer(self.ctx.policy.parameters(), self.cfg.trainer.optim, lr)
        sched = build_scheduler(opt, total_steps=steps, warmup_steps=warmup, decay=s.lr_scheduler, min_ratio=s.min_lr_ratio)
        return self.accelerator.prepare(opt, sched)

    def _bar(self, total: int, desc: str):
        return tqdm(total=total, desc=desc, dynamic_ncols=True, disable=not self.accelerator.is_main_process)

    def _run_rce(self) -> None:
        steps = self.derived.rce_steps
        opt, sched = self._optimizer(self.cfg.schedule.rce_lr, steps, self.derived.rce_warmup_steps)
        with self._bar(steps, "RCE") as bar:
            for _ in range(steps):
                self.step += 1
                metrics = rce_step(self.ctx, self.sampler.next_batch(self.cfg.rollout.batch_size), opt, sched)
                if self.step % self.cfg.logger.log_every == 0 or self.step == steps:
                    self.tracker.log_metrics(metrics, self.step)
                bar.set_postfix(loss=f"{metrics['rce/loss']:.3f}", reward=f"{metrics['rce/reward']:.2f}")
                bar.update()
                if self._eval_due():
                    self._evaluate(self.step)

    def _eval_due(self) -> bool:
        every = self.cfg.eval.eval_every
        return bool(every) and self.step % every == 0

    def _run_grpo(self) -> None:
        """GRPO steps continue the global step count after RCE: one x-axis for every curve."""
        cfg, steps = self.cfg, self.derived.grpo_steps
        opt, sched = self._optimizer(cfg.schedule.grpo_lr, steps, self.derived.warmup_steps)
        last_warned = -10**9
        with self._bar(steps, "GRPO") as bar:
            for grpo_index in range(steps):
                self.step += 1
                batch = self.sampler.next_batch(cfg.rollout.batch_size)
                metrics, samples = grpo_step(self.ctx, batch, grpo_index, opt, sched)
                self._check_finite(metrics, self.step)
                if metrics["train/frac_zero_std_groups"] > ZERO_SPREAD_WARN and self.step - last_warned >= 50:
                    last_warned = self.step
                    log.warning("step %d: %.0f%% of groups have equal rewards (zero advantage: nothing to learn from); "
                                "consider a denser reward (format, tiered), an RCE warm-up or a larger group",
                                self.step, 100 * metrics["train/frac_zero_std_groups"])
                is_last = grpo_index == steps - 1
                if self.step % cfg.logger.log_every == 0 or is_last:
                    self.tracker.log_metrics(metrics, self.step)
                    rows = samples[: cfg.logger.log_completions]
                    if rows:
                        self.tracker.log_table(rows, f"completions/step_{self.step:06d}.json")
                self.history.append({"step": self.step, **metrics})
                bar.set_postfix(reward=f"{metrics['train/reward']:.2f}", kl=f"{metrics.get('train/kl', 0.0):.3f}")
                bar.update()
                if self._eval_due() or is_last:
                    self._evaluate(self.step)
                if (cfg.trainer.save_every and (grpo_index + 1) % cfg.trainer.save_every == 0) or is_last:
                    self._save(self.step)
        if steps == 0:
            self._evaluate(self.step)
            self._save(self.step)

    def _check_finite(self, metrics: dict[str, float], step: int) -> None:
        bad = [k for k in ("train/loss/total", "train/grad_norm") if k in metrics and not math.isfinite(metrics[k])]
        if bad:
            log.warning("step %d: non-finite %s", step, ", ".join(bad))

    def _evaluate(self, step: int) -> None:
        examples = self.ctx.task.val[: self.cfg.eval.num_samples]
        with tqdm(total=len(examples), desc="eval", leave=False, dynamic_ncols=True,
                  disable=not self.accelerator.is_main_process) as bar:
            metrics = evaluate(self.ctx, examples, progress=bar)
        self.final_metrics.update(metrics)
        self.tracker.log_metrics(metrics, step)
        if self.accelerator.is_main_process:
            log.info("step %d: %s", step, "  ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
        if self.trial is not None and self.cfg.optimized_metric in metrics:
            self.trial.report(metrics[self.cfg.optimized_metric], step)
            if self.trial.should_prune():
                self.tracker.set_tags({"pruned": "true", "pruned_at_step": str(step)})
                self.trial.prune()

    def _save(self, step: int) -> None:
        if not self.accelerator.is_main_process:
            return
        state = {"step": step, "stage": "grpo", "run_name": self.derived.run_name, "mlflow_run_id": self.tracker.run_id,
                 "metrics": {k: v for k, v in self.final_metrics.items()}}
        path = save_checkpoint(self.output_dir, step, self.accelerator.unwrap_model(self.ctx.policy), self.ctx.tokenizer, state)
        self.checkpoints.append(path)

    @property
    def output_dir(self) -> str:
        return self.cfg.trainer.output_dir or self.run_dir

    # ---------------------------------------------------------------- close
    def cleanup(self, status: str = "FINISHED") -> None:
        if self.checkpoints:
            self.tracker.log_artifacts(self.checkpoints[-1], "adapter")
        self.tracker.finish(status)
        if self.accelerator.is_main_process and status == "FINISHED":
            log.info(summary(self.comp, self.final_metrics, self.output_dir, self.checkpoints, self.tracker, self.cfg.logger))


def build_tracker_none():
    from grpo.tracking.base import NullTracker

    return NullTracker()


def flatten(tree, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = tree
    return out
