"""The built components of one run, and the two decisions every builder of them shares.

`Recipe.setup` builds a `RunContext` for training and `python -m grpo.eval` one for evaluation;
the stages (grpo/stages/) read only what is here. `make_accelerator` and `generation_budget`
are the device and max-new-tokens rules both builders follow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from transformers import PreTrainedTokenizerBase

from grpo.algorithms.kl import KLController, kl_controller
from grpo.config.derived import Derived
from grpo.config.schema import AlgorithmConfig, RunConfig, TrainerConfig
from grpo.launch import sharding_is_ours
from grpo.models.load import context_length
from grpo.parallel import ParallelStrategy, build_strategy
from grpo.rewards.scorer import RewardScorer
from grpo.rollout.engine import RolloutEngine
from grpo.rollout.experience import ExperienceBuffer, build_experience
from grpo.rollout.tokens import TokenIds
from grpo.tasks.base import Example, Task
from grpo.tasks.prompts import Prompts
from grpo.timing import StepTimer

Reference = Callable[[], AbstractContextManager[torch.nn.Module]]


@dataclass
class RunContext:
    cfg: RunConfig
    derived: Derived
    accelerator: Accelerator
    policy: torch.nn.Module  # prepared (possibly DDP-wrapped) for training
    tokenizer: PreTrainedTokenizerBase
    engine: RolloutEngine
    scorer: RewardScorer
    task: Task
    kl_ctrl: KLController  # the KL coefficient of this step (fixed or adaptive)
    max_new_tokens: int  # generation.max_new_tokens bounded by the model's context
    reference: Reference | None = None  # None: no KL term reads a reference (see needs_reference)
    token_ids: TokenIds | None = None  # the tokenizer's ids, each string tokenized once (built from `tokenizer`)
    timer: StepTimer = field(default_factory=StepTimer)
    parallel: ParallelStrategy | None = None  # how the policy is spread over processes (None: data parallel)
    prompts: Prompts = field(default_factory=Prompts)  # what the policy is prompted with (grpo/tasks/prompts.py)
    experience: ExperienceBuffer | None = None  # rollout.experience_buffer (None: off); the same on every rank
    # The executor LLM's use over the whole run, every process's (calls, tokens, cost_usd when priced)
    executor_totals: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.token_ids is None:
            self.token_ids = TokenIds(self.tokenizer)
        if self.parallel is None:
            from grpo.parallel.data_parallel import DataParallel

            self.parallel = DataParallel(self.accelerator)

    @property
    def sampler_model(self) -> torch.nn.Module:
        """The whole, bare model for generate(): no DDP wrapper, no FSDP shard (grpo/parallel/)."""
        return self.parallel.sampler_model(self.policy)

    def memory_state(self) -> dict:
        """What the run learned from its rollouts besides the weights, for a checkpoint's training state
        (restored by resume.restore_training): the experience buffer (None: off) and the prompts' memory
        (AFlow's best workflows; {}: none). Both are fed every process's rows: the same on every rank.
        With them, the executor's running totals, so a resumed run's totals go on from the checkpoint's."""
        return {
            "experience": self.experience.state_dict() if self.experience is not None else None,
            "prompts": self.prompts.state_dict(),
            "executor_totals": dict(self.executor_totals),
        }

    def local_share(self, items: Sequence) -> list:
        """This process's share of a global batch (prompts per step are global)."""
        return list(items[self.accelerator.process_index :: self.accelerator.num_processes])


def needs_reference(a: AlgorithmConfig) -> bool:
    """Whether any step reads reference log-probs: a KL term with a coefficient above 0.

    The adaptive controller only scales a positive coefficient, so 0 stays 0 for the whole run.
    """
    return a.kl_beta > 0


def make_accelerator(trainer: TrainerConfig, **kwargs) -> Accelerator:
    """The run's accelerator on the configured device (auto: CUDA when present), threads set first."""
    if trainer.threads:
        torch.set_num_threads(trainer.threads)
    cpu = trainer.device == "cpu" or (trainer.device == "auto" and not torch.cuda.is_available())
    if trainer.parallel == "fsdp":
        sharding_is_ours()  # accelerate starts the processes; grpo/parallel/fsdp.py shards
    return Accelerator(cpu=cpu, **kwargs)


def generation_budget(
    asked: int, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, examples: Iterable[Example]
) -> tuple[int, int]:
    """(new tokens per completion, the model's context): `asked`, bounded so that the longest
    prompt plus its completion fits the context."""
    context = context_length(model)
    longest = max(len(tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]) for ex in examples)
    return max(1, min(asked, context - longest)), context


def build_engine(cfg: RunConfig, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, context: int):
    """The sampler `rollout.engine` names (the stages only call its `generate`). vLLM is imported
    only when chosen; the server engine needs no vLLM here, only the server."""
    from grpo.rollout.engine import HFGenerateEngine, MergedEngine

    name = cfg.rollout.engine
    if name == "hf":
        return HFGenerateEngine(tokenizer)
    if name == "vllm":
        from grpo.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(tokenizer, model, cfg.rollout, seed=cfg.seed, context=context)
    if name == "vllm_server":
        from grpo.rollout.vllm_server import VLLMServerEngine

        return VLLMServerEngine(
            tokenizer, model, cfg.rollout, served=cfg.rollout.server_model or cfg.model.name_or_path
        )
    return MergedEngine(tokenizer)


def build_training_context(
    cfg: RunConfig,
    derived: Derived,
    accelerator: Accelerator,
    resume_path: str | None = None,
    weights_key: str = "trainer.resume",
    output_dir: str | None = None,
) -> RunContext:
    """The policy (LoRA applied, a checkpoint's weights loaded, prepared), its reference, the task,
    the sampler and the scorer of a training run. The order keeps the random stream as it was.

    `resume_path`: the checkpoint whose weights to load, named by `weights_key` (trainer.resume,
    or trainer.init_from for weights only). The tiny model's init is derived.model_init_seed.
    `output_dir`: the run's directory (the executor LLM's reply cache goes there)."""
    from grpo.checkpoint import load_weights
    from grpo.models.load import load_model
    from grpo.models.lora import apply_lora, reference_context
    from grpo.tasks.aflow import as_prompted, build_prompts
    from grpo.tasks.registry import build_task

    model, tokenizer = load_model(cfg.model, init_seed=derived.model_init_seed)
    model = apply_lora(model, cfg.lora)
    if resume_path:
        load_weights(model, resume_path, cfg.lora.enabled, weights_key)
    parallel = build_strategy(cfg.trainer, accelerator, lora=cfg.lora.enabled)
    reference = (
        reference_context(model, cfg.lora.enabled, place=parallel.prepare_frozen)
        if needs_reference(cfg.algorithm)
        else None
    )
    policy = parallel.prepare(model)
    task = build_task(cfg.task)
    prompts = build_prompts(cfg.task, cfg.rollout, cfg.reward.executor.operator_descriptions_path)
    max_new, context = generation_budget(
        cfg.generation.max_new_tokens,
        parallel.sampler_model(policy),
        tokenizer,
        as_prompted(prompts, (*task.train, *task.val)),
    )
    prompts.limit(context - max_new, lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    a = cfg.algorithm
    engine = build_engine(cfg, parallel.sampler_model(policy), tokenizer, context)
    return RunContext(
        cfg=cfg,
        derived=derived,
        accelerator=accelerator,
        policy=policy,
        tokenizer=tokenizer,
        engine=engine,
        scorer=RewardScorer(cfg.reward, output_dir),  # the executor's reply cache, if any, is kept in output_dir
        task=task,
        kl_ctrl=kl_controller(a.kl_ctrl, a.kl_beta, a.kl_target, a.kl_horizon),
        max_new_tokens=max_new,
        reference=reference,
        token_ids=engine.token_ids,  # one cache per run: the engine's prompts and RCE's candidates
        parallel=parallel,
        prompts=prompts,
        experience=build_experience(cfg.rollout.experience_buffer),
    )
