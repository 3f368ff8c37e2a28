"""Typed schema of every config group.

Each dataclass is the contract of one group under `conf/`. The root `RunConfig` is stored in
Hydra's ConfigStore as `grpo_schema` and sits first in `conf/config.yaml`'s defaults list, so
every YAML file and every command-line override is merged into these types: an unknown key or
a wrong type fails at compose time. Range rules live in `checks.py`; derived values in
`derived.py`. Names follow ../shared/SEED_SPEC.md where it fixes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The trainer group (optimizer, parallel strategy, offloading) has its own module; its types are
# reachable from here like every other group's.
from grpo.config.trainer import (  # noqa: F401
    FsdpConfig,
    OffloadConfig,
    OptimConfig,
    RefConfig,
    RefFsdpConfig,
    TrainerConfig,
)


@dataclass
class TinyArchConfig:
    """A small randomly initialised decoder built from a transformers config (offline)."""

    architecture: str = "qwen2"  # qwen2 | llama
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 64  # the context bound that caps generation for `tiny`


@dataclass
class ModelConfig:
    name: str = "tiny"  # a label for run names and tags
    # Hub id or local directory. None builds the tiny model from `tiny` below.
    name_or_path: str | None = None
    tiny: TinyArchConfig = field(default_factory=TinyArchConfig)
    size: str | None = None  # informational (seed 002's "3B"/"7B")
    bf16: bool = False  # load weights in bfloat16
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False
    # Seeds the random init of `tiny`; null: derived from the run's `seed` (derived.model_init_seed).
    init_seed: int | None = None


@dataclass
class LoraConfig:
    enabled: bool = True  # false: full fine-tuning (`lora=none`)
    rank: int = 8
    alpha: float = 16.0  # scaling = alpha / rank is derived and printed
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class GenerationConfig:
    """Policy sampling during training."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 disables top-k filtering
    max_new_tokens: int = 8  # bounded at run time by the model's context length


@dataclass
class ExperienceBufferConfig:
    """Seed 000's experience buffer: the highest-reward (prompt, completion, reward) rows seen so far.

    A GRPO group whose rewards are all equal carries no signal; a buffered success for that prompt
    replaces one member so the group has a spread again (grpo/rollout/experience.py)."""

    buffer_size: int = 0  # rows kept, best reward first; 0: off (seeds 000/001: 100; the old minimal: 20)
    min_reward: float = 0.0  # only rows scoring above this are kept (a success, not any row)
    per_prompt: int = 2  # rows kept per prompt, so one easy prompt cannot fill the buffer


@dataclass
class SwitchConfig:
    enabled: bool = False


@dataclass
class PromptOptimizerConfig:
    """AFlow's optimizer prompt: the policy's prompt carries the best workflows found so far for its domain."""

    enabled: bool = False
    num_examples: int = 2  # best workflows shown per prompt


@dataclass
class RolloutConfig:
    batch_size: int = 8  # prompts per optimizer step, global across processes
    group_size: int = 4  # completions per prompt (G)
    # Who samples: merged (our plain decoder, LoRA merged; the CPU default) | hf (model.generate)
    # | vllm (a vllm.LLM in this process) | vllm_server (a vLLM OpenAI-compatible server over HTTP).
    engine: str = "merged"
    # vllm: how the policy reaches the engine before each rollout: adapter (the LoRA adapter, a new
    # LoRARequest per sync) | merged (W + scale * B @ A pushed into its weights). lora=none: full weights.
    sync: str = "adapter"
    # Sampler/trainer mismatch (vllm engines): per-token weights exp(logp_trainer - logp_sampler) on
    # the surrogate: none | truncate (min(w, cap)) | mask (0 where w > cap). grpo/algorithms/is_correction.py
    is_correction: str = "none"
    is_cap: float = 2.0
    # vLLM engine (seed 002's worker.rollout.*; EasyR1 0.6 / TP 1 for 3B); ignored by merged and hf.
    gpu_memory_utilization: float = 0.3  # GPU share for weights + KV cache (colocated with training: small)
    tensor_parallel_size: int = 1
    enforce_eager: bool | None = None  # true: no graphs/compilation; null: true on a CPU (compiling takes ~45 s)
    max_model_len: int | None = None  # null: the model's context
    max_num_batched_tokens: int | None = None  # null: vLLM's default
    sleep: bool = False  # GPU only: free the KV cache and weights during the update, wake for the rollout
    # vllm_server: where it listens, the model it must serve (null: model.name_or_path), retries and the
    # directory both sides read adapters from (null: a temporary directory on this machine).
    server_url: str = "http://127.0.0.1:8000"
    server_model: str | None = None
    server_timeout: float = 120.0  # seconds one request may take
    server_retries: int = 5  # attempts to reach the server before the run stops (waits 1, 2, 4 ... s)
    sync_dir: str | None = None
    # Where GRPO's completions come from: policy (sampled by the engine) | file (the top-k candidates of
    # task.candidates_path per prompt, k from schedule.grpo_top_k; seed 004's offline beams)
    candidates: str = "policy"
    experience_buffer: ExperienceBufferConfig = field(default_factory=ExperienceBufferConfig)
    prompt_optimizer: PromptOptimizerConfig = field(default_factory=PromptOptimizerConfig)
    # The operators' descriptions (reward.executor.operator_descriptions_path) go into the policy's prompt.
    operator_prompt_enhancer: SwitchConfig = field(default_factory=SwitchConfig)


@dataclass
class ExecutorConfig:
    """The executor LLM that runs AFlow workflows' operators, over any OpenAI-compatible API."""

    model: str = "gpt-4o-mini"
    base_url: str | None = None  # null: the openai client's default (OPENAI_BASE_URL or OpenAI's)
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never logged
    temperature: float = 0.0
    max_tokens: int = 4096
    timeout: float = 180.0  # seconds per request
    max_concurrency: int = 8  # requests in flight at once
    max_retries: int = 3  # on 429, 5xx and timeouts, with exponential backoff
    cache: str = "read_write"  # off | read_write | read_only (replay without the server)
    cache_path: str | None = None  # null: <output dir>/executor_cache.sqlite (stored with the run)
    # The provider's list price in USD per million tokens: reward/executor_cost_usd per step (0, 0: not logged)
    price_per_million_input_tokens: float = 0.0
    price_per_million_output_tokens: float = 0.0
    config_path: str | None = None  # seed 003's aflow_llm.yaml (informational)
    operator_descriptions_path: str = "experiments/data/aflow/operators.yaml"  # seed 003: config/aflow_operators.yaml


@dataclass
class JudgeConfig:
    """reward=llm_judge: the executor LLM grades each completion (grpo/rewards/llm_judge.py). The template's
    fields: {prompt}, {completion}, {answer} (the reference answer; "(none)" where the task has none), {scale}."""

    template: str = (
        "Grade the response to the problem below.\nProblem:\n{prompt}\nReference answer: {answer}\nResponse:\n"
        "{completion}\nRate the response from 0 to {scale}: {scale} when it is fully correct, 0 when it is wrong "
        "or empty.\nReply with one line: Score: <number>."
    )
    system: str | None = None  # a system message before the template, when set
    scale: float = 10.0  # the judge's score is divided by this: "Score: 7" on 0-10 -> 0.7 (clipped to [0, 1])
    pattern: str = r"Score:\s*(-?\d+(?:\.\d+)?)"  # the score is group 1 of the last match (case-insensitive)


@dataclass
class RewardConfig:
    # weighted: sum_k weights[k] * component_k.  lever: alpha * quality + beta * correctness.
    # tiered: seed 003's 5-tier reward (grpo/rewards/tiered.py), one value of `tiers` per completion.
    type: str = "weighted"  # weighted | lever | tiered
    # How components combine: weighted sum of raw values, or each normalised within its group first (GDPO).
    aggregation: str = "sum_then_normalize"  # sum_then_normalize | normalize_then_sum
    weights: dict[str, float] = field(default_factory=lambda: {"correctness": 1.0})
    # Your own reward functions (TRL's contract): name -> "package.module:function"; weight them in `weights`.
    custom: dict[str, str] = field(default_factory=dict)
    alpha: float = 0.0  # Lever: weight of quality (REWARD_ALPHA)
    beta: float = 1.0  # Lever: weight of correctness (REWARD_BETA)
    # Lever's quality: "policy" = exp(mean token log-prob); "file" = the candidate's score in the data.
    quality_source: str = "policy"
    numeric_tolerance: float = 0.0  # |pred - gold| <= tol counts as correct for numeric answers
    tiers: list[float] = field(default_factory=lambda: [1.0, 0.7, 0.4, 0.2, 0.0])  # perfect .. wrong
    near_tolerance: float = 0.1  # tiered: relative error that still counts as near-correct
    tier_rules: list[str] = field(default_factory=lambda: ["exact", "near", "partial", "attempt"])  # tiers 5..2
    partial_overlap: float = 0.5  # tiered "partial": token F1 with the gold answer at least this
    code_near_fraction: float = 0.5  # tiered "near" for code items: share of tests passed at least this
    execution_timeout: float = 10.0  # seconds per code execution (the seeds' AFlow used 180)
    execution_memory_mb: int = 512
    execution_workers: int = 2  # code executions run in parallel, at most this many at once
    # AFlow: a workflow refused for its indentation alone is re-indented and run (seed 003's reactive patching)
    patch_indentation: bool = False
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)


@dataclass
class TemperatureScheduleConfig:
    """Seed 003's sampling-temperature schedule: linear from initial to final over decay_steps."""

    enabled: bool = False
    initial: float = 0.5
    final: float = 0.15
    decay_steps: int = 150  # seed 003 calls it temperature_schedule.warmup_steps


@dataclass
class GrpoTopKConfig:
    """Seed 004: how many of a prompt's highest-scored offline candidates a GRPO group draws from."""

    early: int | None = None  # null: every candidate (seed 004's plan: 3)
    late: int | None = None  # after switch_epoch (seed 004's plan: 5)
    switch_epoch: float = 1.0  # GRPO epochs before `late` applies (the seed does not state it)


@dataclass
class ScheduleConfig:
    rce_epochs: float = 1.0  # passes over the train split in the RCE stage; 0 skips RCE
    rce_steps: int | None = None  # if set, overrides rce_epochs
    grpo_epochs: float | None = None  # used when trainer.max_steps is null
    rce_lr: float = 1.0e-4
    grpo_lr: float = 1.0e-5
    warmup_ratio: float = 0.0  # share of each stage's steps spent warming up the LR
    warmup_steps: int | None = None  # explicit warm-up for the GRPO stage; null: from the ratio
    lr_scheduler: str = "cosine"  # constant | linear | cosine (after warm-up)
    min_lr_ratio: float = 0.0
    temperature: TemperatureScheduleConfig = field(default_factory=TemperatureScheduleConfig)
    grpo_top_k: GrpoTopKConfig = field(default_factory=GrpoTopKConfig)


@dataclass
class RceConfig:
    """Reward-weighted cross-entropy warm-up."""

    candidates: str = "policy"  # policy: sampled | task: the task's answer space | file: task.candidates_path
    # Seed 004: drop candidates that are wrong and whose quality score is below this (null: keep all).
    drop_incorrect_below: float | None = None
    num_candidates: int = 4  # per prompt when sampling from the policy
    tau: float = 1.0  # weights = softmax(reward / tau) within each prompt's candidates
    length_normalize: bool = True


@dataclass
class AlgorithmConfig:
    """The GRPO family's knobs, named as TRL / verl / EasyR1 name them (see conf/algorithm/*.yaml)."""

    name: str = "grpo"
    # advantages
    adv_estimator: str = "grpo"  # grpo | rloo | reinforce_pp | reinforce_pp_baseline
    scale_rewards: str = "group"  # group | batch | none (Dr. GRPO)
    adv_eps: float = 1.0e-4
    # surrogate
    clip_range: float = 0.2  # epsilon (low)
    clip_range_high: float | None = None  # DAPO clip-higher; null: = clip_range
    dual_clip: float | None = None  # c > 1 bounds the loss of negative-advantage tokens (verl clip_ratio_c)
    num_iterations: int = 1  # PPO epochs over one rollout batch (mu); old log-probs kept from the rollout
    ratio_level: str = "token"  # token | sequence (GSPO)
    loss_agg: str = (
        "seq-mean-token-mean"  # token-mean | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm
    )
    # KL to the reference
    use_kl_loss: bool = True  # true: a loss term; false: a penalty subtracted from the reward
    kl_beta: float = 0.04  # 0 skips the reference forward entirely
    kl_estimator: str = "k3"  # k1 | k2 | k3 | abs | k1+ | k3+ (verl: kl, mse, low_var_kl, ...)
    kl_bias_correction: bool = False  # multiply the KL estimate by the ratio (TRL use_bias_correction_kl)
    kl_ctrl: str = "fixed"  # fixed | adaptive (PPO's controller: kl_beta moves towards kl_target)
    kl_target: float = 0.05  # adaptive: the KL to hold (the seeds watch 0.01-0.1)
    kl_horizon: int = 10000
    # sampling and filters
    mask_truncated: bool = False  # completions without EOS contribute no loss (DAPO overlong filtering)
    dynamic_sampling: bool = False  # drop groups with equal rewards and refill (DAPO; EasyR1 online_filtering)
    filter_low: float | None = None  # also drop groups whose mean reward is <= this
    filter_high: float | None = None  # ... or >= this
    max_try_make_batch: int = 20  # refill attempts before training on what was kept
    entropy_coef: float = 0.0  # entropy bonus
    top_entropy_quantile: float = 1.0  # train only on this fraction of highest-entropy tokens (1.0: all)
    rce: RceConfig = field(default_factory=RceConfig)


@dataclass
class TaskConfig:
    name: str = "numgame"  # numgame | arithmetic | mixed | jsonl
    train_size: int = 256
    val_size: int = 64
    seed: int = 1234  # the generator's seed: the train/held-out prompts depend on it only (not the run's `seed`)
    max_number: int = 99
    # Sampling share of each domain in a training batch; empty: the task's domains equally.
    domain_ratios: dict[str, float] = field(default_factory=dict)
    # jsonl task: records {prompt, answer, domain, tests?, meta?}. Validation comes from val_path,
    # or a seeded val_fraction of the train file when val_path is null.
    train_path: str | None = None
    val_path: str | None = None
    test_path: str | None = None
    val_fraction: float = 0.1
    # Offline RCE / GRPO candidates: records {prompt, answer?, candidates: [{text, score, correct}]}.
    candidates_path: str | None = None


@dataclass
class EvalGenerationConfig:
    """Overrides of `generation` at validation (EasyR1's val_override_config)."""

    greedy: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1


@dataclass
class EarlyStoppingConfig:
    enabled: bool = False
    metric: str | None = None  # null: the run's optimized_metric
    mode: str = "max"  # max | min
    patience: int = 3  # validations without improvement before stopping
    min_delta: float = 0.0  # an improvement must beat the best by more than this


@dataclass
class EvalConfig:
    eval_every: int = 0  # GRPO steps between validations; 0: only at the end
    num_samples: int = 50  # held-out prompts per validation (seed: val_samples)
    batch_size: int = 64
    before_train: bool = False
    generation: EvalGenerationConfig = field(default_factory=EvalGenerationConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    save_best: bool = True  # keep a checkpoint of the best validation (exempt from save_limit)


@dataclass
class LoggerConfig:
    backend: str = "mlflow"  # mlflow | none
    tracking_uri: str = "sqlite:///outputs/mlflow.db"
    experiment: str = "grpo-suite"  # the seeds' wandb project
    run_name: str | None = None  # null: generated from the key settings
    log_every: int = 1
    log_completions: int = 8  # sample completions per logged step (table artifact)
    parent_run_id: str | None = None  # set by sweepers: nests this run under the sweep
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class PathsConfig:
    outputs: str = "outputs"


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 42  # this run's randomness: model init and data order (derived), sampling (seed + rank)
    optimized_metric: str = "val/accuracy"  # what grpo.run returns to a sweeper
    run_tag: str | None = None  # last part of the generated run name (preset/experiment)
    # (An Optuna sweep's trial reaches the job through the environment, not this config:
    # grpo/sweep/trial.py, GRPO_OPTUNA_TRIAL.)


def register_schema() -> None:
    """Store the root schema so `conf/config.yaml` can list `grpo_schema` first."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="grpo_schema", node=RunConfig)
