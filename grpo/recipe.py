"""The training recipe: setup -> RCE stage -> GRPO stage (with validation) -> close.

Each stage is a loop of steps from grpo.stages; this file wires the components together,
owns each stage's optimizer, and decides when to log, evaluate, checkpoint, stop early and
resume. Steps are counted once across stages (RCE steps, then GRPO steps).
"""

from __future__ import annotations

import logging
import os
import time

from tqdm.auto import tqdm

from grpo import checkpoint as ckpt
from grpo.compose import Composition
from grpo.config.errors import ConfigError
from grpo.config.flatten import flat_config
from grpo.context import build_training_context, make_accelerator
from grpo.early_stopping import EarlyStopping
from grpo.launch import single_cpu_process_note
from grpo.optim import StagedSchedule, build_optimizer, run_stages, saved_schedule
from grpo.resume import (
    check_compatible,
    gather_rng_states,
    rank0_value,
    restore_training,
    shared_resume_path,
    write_shards,
)
from grpo.run_report import header, summary
from grpo.stages.grpo import grpo_step
from grpo.stages.rce import rce_step
from grpo.stages.validation import validate
from grpo.tasks.mixing import BatchSampler
from grpo.tracking.base import NullTracker, build_tracker
from grpo.tracking.run_record import log_checkpoints, log_run_record
from grpo.tracking.safe import SafeTracker

log = logging.getLogger("grpo")
ZERO_SPREAD_WARN = 0.5  # warn when more than half the groups carry no learning signal
LOG_POINTS = 5  # a stage shorter than logger.log_every is still logged about this many times
REWARD = "reward"  # one series over both stages: rce/reward, then train/reward (each kept as well)


class StopRun(Exception):
    """Training stops early on purpose (early stopping, too many bad steps): not a failure."""


class Recipe:
    def __init__(self, comp: Composition, run_dir: str, tags: dict[str, str], trial=None):
        self.comp, self.cfg, self.derived = comp, comp.cfg, comp.derived
        self.run_dir = run_dir
        self.tags = tags
        self.trial = trial  # optuna trial reporter (sweeps) or None
        self.final_metrics: dict[str, float] = {}
        self.checkpoints: list[str] = []
        self.step = 0  # global optimizer step: RCE steps, then GRPO steps
        es = self.cfg.eval.early_stopping
        self.early = EarlyStopping(mode=es.mode, patience=es.patience, min_delta=es.min_delta)
        self.bad_steps = 0  # non-finite updates in a row
        self.last_eval_step: int | None = None
        self.last_saved_step: int | None = None  # on every process (self.checkpoints is rank 0's)
        self.skipped_total = 0
        self.stop_reason: str | None = None

    @property
    def output_dir(self) -> str:
        return self.cfg.trainer.output_dir or self.run_dir

    @property
    def checkpoint_root(self) -> str:
        return os.path.join(self.output_dir, "checkpoints")

    @property
    def watched_metric(self) -> str:
        return self.cfg.eval.early_stopping.metric or self.cfg.optimized_metric

    # ---------------------------------------------------------------- setup
    def setup(self) -> None:
        from accelerate.utils import set_seed

        cfg = self.cfg
        if note := single_cpu_process_note():
            log.warning(note)
        self.accelerator = acc = make_accelerator(
            cfg.trainer,
            mixed_precision=cfg.trainer.mixed_precision,
            gradient_accumulation_steps=cfg.trainer.gradient_accumulation_steps,
        )
        # Samples differ across processes but the run is reproducible: seed + rank.
        set_seed(cfg.seed + acc.process_index)
        if cfg.rollout.batch_size % acc.num_processes:
            raise ConfigError(
                "rollout.batch_size",
                cfg.rollout.batch_size,
                f"prompts per step are split across processes: must be divisible by {acc.num_processes}",
            )
        ckpt.check_writable(self.output_dir)
        self.shared_checkpoint_root = rank0_value(acc, self.checkpoint_root)  # where every process writes shards
        resume_path = shared_resume_path(acc, cfg.trainer.resume, self.checkpoint_root)
        resume_state = ckpt.read_state(resume_path) if resume_path else None
        if resume_state:
            check_compatible(resume_path, resume_state, self.flat_config())
        weights, key = (resume_path, "trainer.resume") if resume_path else (self._init_from(), "trainer.init_from")
        self.ctx = build_training_context(cfg, self.derived, acc, weights, key, output_dir=self.output_dir)
        self.sampler = BatchSampler(self.ctx.task.train, cfg.task.domain_ratios, seed=self.derived.data_seed)
        self._start_tracking(resume_state.get("mlflow_run_id") if resume_state else None)
        self.resume_training = ckpt.load_training(resume_path) if resume_path else None
        self._build_optimizer(resume_path)
        if resume_state:
            self._restore_progress(resume_state)
        if acc.is_main_process:
            log.info(header(self.comp, run_dir=self.output_dir, ctx=self.ctx, tracker=self.tracker))
            if resume_path:
                log.info("resuming from %s (step %d, stage %s)", resume_path, self.step, resume_state["stage"])
            self._log_config()

    def _init_from(self) -> str | None:
        """trainer.init_from, checked: weights only (a resumed run continues its own weights instead)."""
        if not self.cfg.trainer.init_from:
            return None
        path, state = ckpt.read_init_from(self.cfg.trainer.init_from)
        if self.cfg.lora.enabled and self.cfg.model.name_or_path is None:  # an adapter fits its own base init
            ckpt.check_adapter_base(path, state, self.derived.model_init_seed)
        if self.accelerator.is_main_process:
            log.info(
                "weights from %s (step %s of %s), a new run from step 0", path, state["step"], state.get("run_name")
            )
        return path

    def _start_tracking(self, resume_run_id: str | None) -> None:
        """Rank 0 tracks (into the checkpoint's MLflow run when resuming); the others keep local files."""
        acc = self.accelerator
        if acc.is_main_process:
            self.tracker = build_tracker(
                self.cfg.logger, self.derived.run_name, self.tags, self.output_dir, resume_run_id=resume_run_id
            )
        else:
            self.tracker = SafeTracker(NullTracker(), os.path.join(self.output_dir, f".rank{acc.process_index}"))
        if self.trial is not None and self.tracker.run_id:  # lets a restarted sweep close this run if we die
            self.trial.set_user_attr("mlflow_run_id", self.tracker.run_id)

    def _restore_progress(self, state: dict) -> None:
        self.step = state["step"]
        self.early.load_state_dict(state["early_stopping"])
        self.final_metrics.update(state.get("metrics", {}))
        self.skipped_total = state.get("skipped_steps", 0)
        restore_training(self.accelerator, self.ctx, self.sampler, self.resume_training, self.cfg.seed, self.step)

    def flat_config(self) -> dict:
        return flat_config(self.comp.raw)

    def _log_config(self) -> None:
        """What re-creates the run (grpo/tracking/run_record.py): config, overrides, data, environment."""
        from omegaconf import OmegaConf

        from grpo.tasks.lineage import data_sources

        log_run_record(
            self.tracker,
            {**self.flat_config(), **self.derived.as_params()},
            OmegaConf.to_yaml(self.comp.raw, resolve=True),
            overrides=self.comp.overrides,
            overrides_text=self.tags.get("overrides", ""),
            sources=data_sources(self.cfg.task, self.ctx.task),
        )

    # ---------------------------------------------------------------- stages
    def train(self) -> dict[str, float]:
        t0 = time.perf_counter()
        rce_steps = self.derived.rce_steps
        try:
            if self.cfg.eval.before_train and self.step == 0:
                self._evaluate()
            if self.step < rce_steps:
                self._run_rce()
            self._run_grpo()
        except StopRun as stop:
            self.stop_reason = str(stop)
            log.warning("stopping: %s", stop)
            if self.last_eval_step != self.step:  # the objective describes the weights the run ends with
                self._evaluate()
        self.final_metrics["time/total"] = time.perf_counter() - t0
        self.tracker.log_metrics({"time/total": self.final_metrics["time/total"]}, self.step)
        return self.final_metrics

    def _build_optimizer(self, resume_path: str | None) -> None:
        """The run's one optimizer and LR schedule, prepared once (what FSDP and ZeRO need); each stage
        restarts both (`StagedSchedule.begin`). A resumed run continues the checkpoint's."""
        cfg, stages = self.cfg, run_stages(self.cfg, self.derived)
        opt = build_optimizer(self.ctx.policy.parameters(), cfg.trainer.optim, cfg.schedule.rce_lr)
        self.optimizer = self.accelerator.prepare(opt)
        self.ctx.parallel.watch_optimizer(self.optimizer)
        self.schedule = StagedSchedule(
            self.optimizer, stages, decay=cfg.schedule.lr_scheduler, min_ratio=cfg.schedule.min_lr_ratio
        )
        training = self.resume_training
        if training:
            self.ctx.parallel.load(resume_path, self.ctx.policy, self.optimizer, training)
            self.schedule.load_state_dict(saved_schedule(training))

    def _bar(self, total: int, initial: int, desc: str, leave: bool = True):
        main = self.accelerator.is_main_process
        return tqdm(total=total, initial=initial, desc=desc, leave=leave, dynamic_ncols=True, disable=not main)

    def _run_rce(self) -> None:
        steps = self.derived.rce_steps
        self.schedule.begin("rce")
        opt, sched = self.optimizer, self.schedule
        with self._bar(steps, self.step, "RCE") as bar:
            while self.step < steps:
                self.step += 1
                metrics = rce_step(self.ctx, self.sampler.next_batch(self.cfg.rollout.batch_size), opt, sched)
                self._guard(metrics["rce/skipped"], metrics["rce/loss"])
                if self._log_due(steps, steps):
                    self.tracker.log_metrics({**metrics, REWARD: metrics["rce/reward"]}, self.step)
                bar.set_postfix(loss=f"{metrics['rce/loss']:.3f}", reward=f"{metrics['rce/reward']:.2f}")
                bar.update()
                if self._eval_due():
                    self._evaluate()
        self._save("rce")  # a stage boundary: resuming later never redoes RCE

    def _run_grpo(self) -> None:
        cfg, rce_steps, steps = self.cfg, self.derived.rce_steps, self.derived.grpo_steps
        self.schedule.begin("grpo")  # a fresh optimizer state and the GRPO schedule (unless resumed inside GRPO)
        opt, sched = self.optimizer, self.schedule
        last_warned = -(10**9)
        batch_size = cfg.rollout.batch_size
        end = rce_steps + steps
        with self._bar(steps, self.step - rce_steps, "GRPO") as bar:
            while self.step < end:
                self.step += 1
                grpo_index = self.step - rce_steps - 1
                metrics, samples = grpo_step(
                    self.ctx,
                    self.sampler.next_batch(batch_size),
                    grpo_index,
                    opt,
                    sched,
                    refill=lambda: self.sampler.next_batch(batch_size),
                )
                if metrics["train/frac_zero_std_groups"] > ZERO_SPREAD_WARN and self.step - last_warned >= 50:
                    last_warned = self.step
                    log.warning(
                        "step %d: %.0f%% of groups have equal rewards (zero advantage: nothing to learn from); "
                        "consider a denser reward (format, tiered), an RCE warm-up or a larger group",
                        self.step,
                        100 * metrics["train/frac_zero_std_groups"],
                    )
                is_last = self.step == end
                if self._log_due(steps, end):
                    self.tracker.log_metrics({**metrics, REWARD: metrics["train/reward"]}, self.step)
                    rows = samples[: cfg.logger.log_completions]
                    if rows:
                        self.tracker.log_table(rows, f"completions/step_{self.step:06d}.json")
                bar.set_postfix(reward=f"{metrics['train/reward']:.2f}", kl=f"{metrics.get('train/kl', 0.0):.3f}")
                bar.update()
                self._guard(metrics["train/skipped"], metrics.get("train/loss/total", 0.0), save=True)
                best = self._evaluate() if self._eval_due() or is_last else False
                if (cfg.trainer.save_every and (grpo_index + 1) % cfg.trainer.save_every == 0) or is_last or best:
                    self._save("grpo", best=best)
                self._check_early_stop()
        if steps == 0 and self.step == rce_steps and self.last_eval_step != self.step:  # not twice at one step
            self._evaluate()

    def _log_due(self, stage_steps: int, stage_end: int) -> bool:
        """Every logger.log_every steps and at a stage's last step; a stage shorter than log_every
        (a sweep's short trials) about LOG_POINTS times instead of once."""
        every = self.cfg.logger.log_every
        if stage_steps < every:
            every = max(1, stage_steps // LOG_POINTS)
        return self.step % every == 0 or self.step == stage_end

    def _eval_due(self) -> bool:
        every = self.cfg.eval.eval_every
        return bool(every) and self.step % every == 0

    # ---------------------------------------------------------------- guards
    def _guard(self, skipped: float, loss: float, save: bool = False) -> None:
        """Count non-finite updates; too many in a row stop the run at its last good state."""
        if not skipped:
            self.bad_steps = 0
            return
        self.bad_steps += 1
        self.skipped_total += 1
        log.warning(
            "step %d: non-finite loss or gradient (loss=%s): update skipped (%d in a row)",
            self.step,
            loss,
            self.bad_steps,
        )
        if self.bad_steps >= self.cfg.trainer.max_bad_steps:
            if save:
                self._save("grpo")
            raise StopRun(
                f"{self.bad_steps} non-finite updates in a row at step {self.step} (trainer.max_bad_steps="
                f"{self.cfg.trainer.max_bad_steps}); the last good weights are checkpointed. "
                "Lower the learning rate or check the reward for NaN/inf"
            )

    def _check_early_stop(self) -> None:
        if self.cfg.eval.early_stopping.enabled and self.early.should_stop:
            if self.last_saved_step != self.step:
                self._save("grpo")
            raise StopRun(
                f"early stopping: {self.watched_metric} has not improved for {self.early.bad_evals} validations "
                f"(best {self.early.best:.4f} at step {self.early.best_step})"
            )

    # ---------------------------------------------------------------- evaluate and save
    def _evaluate(self) -> bool:
        """Validate; returns whether this is the best validation so far."""
        examples = self.ctx.task.val[: self.cfg.eval.num_samples]
        with self._bar(len(examples), 0, "eval", leave=False) as bar:
            metrics = validate(self.ctx, examples, progress=bar)
        self.final_metrics.update(metrics)
        self.last_eval_step = self.step
        self.tracker.log_metrics(metrics, self.step)
        if self.accelerator.is_main_process:
            log.info("step %d: %s", self.step, "  ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
        best = False
        if self.watched_metric in metrics:
            best = self.early.update(metrics[self.watched_metric], self.step)
            self.final_metrics.update(
                {"best/step": float(self.early.best_step), f"best/{self.watched_metric}": self.early.best}
            )
        if self.trial is not None and self.cfg.optimized_metric in metrics:
            self.trial.report(metrics[self.cfg.optimized_metric], self.step)
            if self.trial.should_prune():
                self.tracker.set_tags({"pruned": "true", "pruned_at_step": str(self.step)})
                self.trial.prune()
        return best and self.cfg.eval.save_best

    def _save(self, stage: str, best: bool = False) -> None:
        acc = self.accelerator
        self.last_saved_step = self.step
        rng_per_rank = gather_rng_states(acc)  # every process: a collective under DDP
        staging = write_shards(acc, self.ctx, self.optimizer, self.shared_checkpoint_root, self.step)
        if not acc.is_main_process:
            return
        state = {
            "step": self.step,
            "stage": stage,
            "run_name": self.derived.run_name,
            "mlflow_run_id": self.tracker.run_id,
            "metrics": dict(self.final_metrics),
            "early_stopping": self.early.state_dict(),
            "skipped_steps": self.skipped_total,
            "config": self.flat_config(),
            "seeds": {"seed": self.cfg.seed, "model_init_seed": self.derived.model_init_seed},
        }
        training = {
            "stage": stage,
            "optimizer": self.ctx.parallel.optimizer_state(self.optimizer),  # None: in the shards
            "schedule": self.schedule.state_dict(),
            "rng": rng_per_rank[0],
            "rng_per_rank": rng_per_rank,
            "sampler": self.sampler.state_dict(),
            "kl_ctrl": self.ctx.kl_ctrl.state_dict(),
            **self.ctx.memory_state(),  # the experience buffer and the prompts' memory (AFlow's best workflows)
        }
        path = ckpt.save_checkpoint(
            self.checkpoint_root,
            self.step,
            self.ctx.sampler_model,  # the whole model, in the standard format (peft's adapter or the full model)
            self.ctx.tokenizer,
            state,
            training,
            staging=staging,
        )
        self.checkpoints.append(path)
        keep = {self.early.best_step} if self.cfg.eval.save_best and self.early.best_step is not None else set()
        ckpt.prune_checkpoints(self.checkpoint_root, self.cfg.trainer.save_limit, keep)

    # ---------------------------------------------------------------- close
    def cleanup(self, status: str = "FINISHED") -> None:
        self.tracker.catch_up()  # a store that failed mid-run and is back gets what it missed
        best_dir = os.path.join(self.checkpoint_root, f"step_{self.early.best_step}")
        final = self.checkpoints[-1] if self.checkpoints else None
        log_checkpoints(self.tracker, final, best_dir if self.early.best_step is not None else None)
        if self.stop_reason:
            self.tracker.set_tags({"stop_reason": self.stop_reason[:250]})
        self.tracker.finish(status)
        if self.accelerator.is_main_process and status == "FINISHED":
            log.info(
                summary(
                    self.comp,
                    self.final_metrics,
                    self.output_dir,
                    self.checkpoints,
                    self.tracker,
                    self.cfg.logger,
                    best=(self.watched_metric, self.early.best, self.early.best_step, best_dir),
                    stop_reason=self.stop_reason,
                    executor_totals=self.ctx.executor_totals,
                )
            )
