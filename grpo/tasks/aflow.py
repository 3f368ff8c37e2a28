"""task=aflow: problems from JSONL (math / qa / code); the policy answers each with a workflow.

The records are the jsonl task's (grpo/tasks/jsonl.py: same files, splits, domains and ratios);
what differs is the prompt the policy sees, built per sampling by `WorkflowPrompts`:

    Write def solve(problem) that calls operators.        one line of instruction, always
    Operators:                                            rollout.operator_prompt_enhancer.enabled:
    AnswerGenerate(input): step by step, the answer       the descriptions in
    ...                                                   reward.executor.operator_descriptions_path
    Best workflows:                                       rollout.prompt_optimizer.enabled: the
    def solve(p): ...                                     num_examples highest-reward distinct workflows
    Problem: What is 7*8?                                 seen so far for this problem's domain
    Workflow:

The optimizer's memory is updated from every scored rollout (RCE candidates and GRPO groups, see
grpo/tasks/prompts.py); only workflows that scored above 0 enter it, and examples are added only
while the prompt fits the model's context with the generation budget left. Each step's scored rows
of every data-parallel process are observed on every process in rank order, so all ranks hold the
same memory; it is checkpointed (`state_dict`) and restored on resume.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import yaml

from grpo.algorithms.names import AFLOW_OPERATORS as OPERATORS
from grpo.config.errors import ConfigError
from grpo.config.schema import RolloutConfig, TaskConfig
from grpo.tasks import jsonl
from grpo.tasks.base import Example, Task
from grpo.tasks.files import resolve_path
from grpo.tasks.prompts import Prompts

DESCRIPTIONS_KEY = "reward.executor.operator_descriptions_path"
INSTRUCTION = "Write def solve(problem) that calls operators.\n"


def build_aflow_task(cfg: TaskConfig) -> Task:
    task = jsonl.build_jsonl_task(cfg)
    return Task(name="aflow", train=task.train, val=task.val, answer_pattern=task.answer_pattern)


def load_descriptions(path: str) -> dict[str, str]:
    """Operator name -> "interface: description", from the YAML file at `path` (one line errors)."""
    full = resolve_path(DESCRIPTIONS_KEY, path)
    try:
        with open(full, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(DESCRIPTIONS_KEY, path, f"cannot read it as YAML ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(DESCRIPTIONS_KEY, path, "must map operator names to {interface, description}")
    out = {}
    for name, entry in data.items():
        if name not in OPERATORS:
            raise ConfigError(DESCRIPTIONS_KEY, path, f"names {name!r}, not an operator ({', '.join(OPERATORS)})")
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("interface", "description")):
            raise ConfigError(DESCRIPTIONS_KEY, path, f"{name}: needs text 'interface' and 'description'")
        out[name] = f"{entry['interface'].strip()}: {' '.join(entry['description'].split())}"
    return out


class WorkflowPrompts(Prompts):
    """AFlow's prompt: instruction, operator descriptions (enhancer), best workflows (optimizer), problem."""

    def __init__(self, descriptions: dict[str, str] | None, num_examples: int):
        super().__init__()
        self.header = INSTRUCTION
        if descriptions:
            self.header += "Operators:\n" + "".join(f"{line}\n" for line in descriptions.values())
        self.num_examples = num_examples  # 0: the prompt optimizer is off
        self.best: dict[str, list[tuple[float, str]]] = {}  # domain -> (reward, workflow), best first
        self.max_tokens: int | None = None
        self.count: Callable[[str], int] = len

    def build(self, example: Example) -> str:
        tail = f"Problem: {example.prompt}\nWorkflow:\n"
        prompt = self.header + tail
        shown = []
        for _, workflow in self.best.get(example.domain, [])[: self.num_examples]:
            candidate = self.header + "Best workflows:\n" + "".join(f"{w}\n" for w in [*shown, workflow]) + tail
            if self.max_tokens is not None and self.count(candidate) > self.max_tokens:
                break
            shown.append(workflow)
            prompt = candidate
        return prompt

    def observe(self, examples, completions, rewards, repeats):
        if not self.num_examples:
            return
        rows = [ex for ex in examples for _ in range(repeats)]
        for ex, text, reward in zip(rows, completions, rewards):
            text, reward = text.strip(), float(reward)
            if reward <= 0 or not text:
                continue
            best = self.best.setdefault(ex.domain, [])
            known = next((i for i, (_, w) in enumerate(best) if w == text), None)
            if known is not None:
                if reward <= best[known][0]:
                    continue
                best.pop(known)
            best.append((reward, text))
            best.sort(key=lambda item: -item[0])  # stable: the first seen of equal rewards stays first
            del best[self.num_examples :]

    @property
    def learns(self) -> bool:
        return self.num_examples > 0

    def limit(self, max_tokens, count):
        self.max_tokens, self.count = max_tokens, count

    def state_dict(self) -> dict:
        """The best workflows per domain, best first: {"best": {domain: [[reward, workflow], ...]}}."""
        return {"best": {domain: [[r, w] for r, w in rows] for domain, rows in self.best.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.best = {domain: [(float(r), w) for r, w in rows] for domain, rows in state.get("best", {}).items()}


def build_prompts(task: TaskConfig, rollout: RolloutConfig, descriptions_path: str) -> Prompts:
    """The run's prompt builder: the task's prompts, or AFlow's for task=aflow (`descriptions_path`:
    reward.executor.operator_descriptions_path, read when the enhancer is on)."""
    if task.name != "aflow":
        return Prompts()
    descriptions = load_descriptions(descriptions_path) if rollout.operator_prompt_enhancer.enabled else None
    optimizer = rollout.prompt_optimizer
    return WorkflowPrompts(descriptions, optimizer.num_examples if optimizer.enabled else 0)


def as_prompted(prompts: Prompts, examples: Sequence[Example]) -> list[Example]:
    """The examples with the prompt the policy first sees (no best workflows yet): the generation budget's."""
    from dataclasses import replace

    return [replace(ex, prompt=prompts.build(ex)) for ex in examples]
