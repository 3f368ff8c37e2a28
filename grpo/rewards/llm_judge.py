"""reward=llm_judge: the executor LLM grades each completion, for tasks without a checker.

Each (prompt, completion, reference answer) fills `reward.judge.template`; the executor's reply
is searched for `reward.judge.pattern` (the last match's group 1 is the score) and the score
divided by `reward.judge.scale`, clipped to [0, 1]: "Score: 7" on the 0-10 scale is 0.7. A reply
without a score scores 0 and is counted (`reward/judge_unparsed`); a request the executor could
not answer (after its retries) scores 0 and is counted in `reward/executor_failures`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grpo.config.schema import JudgeConfig
    from grpo.rewards.executor import ExecutorClient, ExecutorReply

NO_ANSWER = "(none)"


def judge_prompt(cfg: JudgeConfig, prompt: str, completion: str, answer: str | None) -> str:
    """The template filled for one completion."""
    reference = NO_ANSWER if answer is None or str(answer).strip() == "" else str(answer)
    return cfg.template.format(prompt=prompt, completion=completion, answer=reference, scale=f"{cfg.scale:g}")


def parse_score(cfg: JudgeConfig, text: str) -> float | None:
    """The reply's score on [0, 1], or None when it holds none."""
    found = re.findall(cfg.pattern, text, flags=re.IGNORECASE)
    if not found:
        return None
    last = found[-1]
    try:
        value = float(last[0] if isinstance(last, tuple) else last)
    except ValueError:
        return None
    return min(1.0, max(0.0, value / cfg.scale))


def score_replies(cfg: JudgeConfig, replies: list[ExecutorReply], executor: ExecutorClient) -> list[float]:
    out, unparsed = [], 0
    for reply in replies:
        score = parse_score(cfg, reply.text) if reply.ok else None
        unparsed += reply.ok and score is None
        out.append(score if score is not None else 0.0)
    if unparsed:
        executor.count("judge_unparsed", unparsed)
    return out


def llm_judge(prompts, completions, *, answer, executor: ExecutorClient, judge: JudgeConfig, **_) -> list[float]:
    """The judge's score of each completion, in [0, 1] (0 for unparseable replies and failed requests)."""
    requests = [judge_prompt(judge, p, c, a) for p, c, a in zip(prompts, completions, answer)]
    return score_replies(judge, executor.complete_many(requests, system=judge.system), executor)


llm_judge.needs_executor = True  # the scorer builds its ExecutorClient and passes it as `executor=`
