"""The experience buffer: the highest-reward (prompt, completion, reward) rows a run has seen.

Seed 000's `experience_buffer`. A GRPO group whose rewards are all equal has zero advantage and
teaches nothing; when the buffer holds a success for that prompt that scored higher than the
group, one member is replaced by it (grpo/stages/replay.py) and the group has a spread again.

The buffer keeps rows, not groups: at most `buffer_size` rows overall and `per_prompt` rows per
prompt, only rows whose reward is above `min_reward`. A full buffer (or a full prompt) evicts its
lowest-reward row for a better one. Among rows of the lowest reward, the one to go belongs to the
prompt with the most rows, the newest first, and a row of equal reward still enters when its prompt
has fewer rows than that one's: so a full buffer of equal successes (a 0/1 reward) keeps taking
prompts it does not cover instead of freezing on the first ones. TRL's replay buffer replaced
whole groups under one key, and in practice held a single group; this one fills from as many
prompts as it has room for (tests/test_experience_buffer.py).

Everything is deterministic: the same rows added in the same order give the same buffer, and
`state_dict` is plain JSON-able data, checkpointed with the run and restored on resume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from grpo.config.schema import ExperienceBufferConfig
from grpo.rollout.engine import Rollout


@dataclass(frozen=True)
class Experience:
    prompt: str
    completion: str
    reward: float
    order: int  # when it was added: the older row wins a tie


def _rank(row: Experience) -> tuple[float, int]:
    """Larger is better: a higher reward, then an older row."""
    return row.reward, -row.order


class ExperienceBuffer:
    def __init__(self, buffer_size: int, min_reward: float = 0.0, per_prompt: int = 2):
        if buffer_size < 0 or per_prompt < 1:
            raise ValueError(f"need buffer_size >= 0 and per_prompt >= 1, got {buffer_size=} {per_prompt=}")
        self.buffer_size = buffer_size
        self.min_reward = min_reward
        self.per_prompt = per_prompt
        self._by_prompt: dict[str, list[Experience]] = {}  # each prompt's rows, best first
        self._count = 0
        self._next = 0  # the order of the next row

    def __len__(self) -> int:
        return self._count

    def rows(self) -> list[Experience]:
        """Every row, best first (reward, then age)."""
        return sorted((r for rows in self._by_prompt.values() for r in rows), key=_rank, reverse=True)

    def prompts(self) -> list[str]:
        return list(self._by_prompt)

    def best_for(self, prompt: str) -> Experience | None:
        """The prompt's highest-reward row (the oldest among equals), or None."""
        rows = self._by_prompt.get(prompt)
        return rows[0] if rows else None

    def add(self, prompts: Sequence[str], completions: Sequence[str], rewards: Sequence[float]) -> int:
        """Offer rows in order; returns how many were taken in (new rows or better rewards)."""
        if not len(prompts) == len(completions) == len(rewards):
            raise ValueError(
                f"prompts, completions and rewards differ in length: {len(prompts)}, {len(completions)}, {len(rewards)}"
            )
        return sum(self._offer(p, c, float(r)) for p, c, r in zip(prompts, completions, rewards))

    def _offer(self, prompt: str, completion: str, reward: float) -> bool:
        if self.buffer_size == 0 or not math.isfinite(reward) or reward <= self.min_reward:
            return False
        rows = self._by_prompt.setdefault(prompt, [])
        same = next((r for r in rows if r.completion == completion), None)
        if same is not None:  # one row per completion: a better score replaces its reward
            if reward <= same.reward:
                return False
            rows.remove(same)
            self._count -= 1
        elif len(rows) >= self.per_prompt:
            if reward <= rows[-1].reward:
                return False
            self._evict(rows[-1])
        elif self._count >= self.buffer_size:
            worst = min((r for rs in self._by_prompt.values() for r in rs), key=self._eviction_rank)
            crowded = len(self._by_prompt[worst.prompt]) - 1 > len(rows)  # evicting it spreads the rows
            if reward < worst.reward or (reward == worst.reward and not crowded):
                self._drop_if_empty(prompt)
                return False
            self._evict(worst)
        self._insert(Experience(prompt, completion, reward, self._next))
        self._next += 1
        return True

    def _eviction_rank(self, row: Experience) -> tuple[float, int, int]:
        """Smallest goes first: the lowest reward, then the prompt with the most rows, then the newest."""
        return row.reward, -len(self._by_prompt[row.prompt]), -row.order

    def _insert(self, row: Experience) -> None:
        rows = self._by_prompt.setdefault(row.prompt, [])
        rows.append(row)
        rows.sort(key=_rank, reverse=True)
        self._count += 1

    def _evict(self, row: Experience) -> None:
        self._by_prompt[row.prompt].remove(row)
        self._count -= 1
        self._drop_if_empty(row.prompt)

    def _drop_if_empty(self, prompt: str) -> None:
        if prompt in self._by_prompt and not self._by_prompt[prompt]:
            del self._by_prompt[prompt]

    def state_dict(self) -> dict:
        """Plain data (lists, strings, numbers): the rows in order of arrival and the next order."""
        ordered = sorted((r for rows in self._by_prompt.values() for r in rows), key=lambda r: r.order)
        return {"rows": [[r.prompt, r.completion, r.reward, r.order] for r in ordered], "next": self._next}

    def load_state_dict(self, state: dict) -> None:
        self._by_prompt, self._count = {}, 0
        for prompt, completion, reward, order in state["rows"]:
            self._insert(Experience(prompt, completion, float(reward), int(order)))
        self._next = int(state["next"])


def build_experience(cfg: ExperienceBufferConfig) -> ExperienceBuffer | None:
    """The buffer `rollout.experience_buffer` asks for; None when buffer_size is 0 (off)."""
    return ExperienceBuffer(cfg.buffer_size, cfg.min_reward, cfg.per_prompt) if cfg.buffer_size else None


def groups_to_replay(rewards: torch.Tensor, group_size: int, buffered: Sequence[float | None]) -> torch.Tensor:
    """[B] bool: the groups whose rewards are all equal (zero spread) and whose prompt has a buffered
    reward above the group's. `rewards` [N = B x G], groups contiguous; `buffered` [B]: the best
    buffered reward of each group's prompt, or None."""
    grouped = rewards.view(-1, group_size)  # [B, G]
    flat = grouped.amax(1) == grouped.amin(1)  # [B]
    better = torch.tensor([b is not None and b > float(g) for b, g in zip(buffered, grouped[:, 0].tolist())])
    return flat & better


def completion_tokens(ids: list[int], eos_id: int, max_new_tokens: int) -> tuple[list[int], bool]:
    """A completion's token ids as the sampler would have produced them: the text's ids and EOS, cut
    to `max_new_tokens` (then without EOS: truncated). Returns (ids, truncated)."""
    full = [*ids, eos_id]
    if len(full) > max_new_tokens:
        return full[:max_new_tokens], True
    return full, False


def replace_completions(
    rollout: Rollout,
    rows: Sequence[int],
    ids: Sequence[list[int]],
    truncated: Sequence[bool],
    texts: Sequence[str],
    pad_id: int,
) -> Rollout:
    """A copy of `rollout` whose completions at `rows` are `ids` (right-padded; the completion width
    grows when one is longer). Prompts stay. Engine log-probs of those rows are zeroed: the engine
    did not sample them (the step skips them in its mismatch metric and correction)."""
    width = max([rollout.completion_ids.size(1), *(len(x) for x in ids)])
    grow = width - rollout.completion_ids.size(1)
    pad = torch.nn.functional.pad
    completion_ids = pad(rollout.completion_ids, (0, grow), value=pad_id).clone()
    mask = pad(rollout.completion_mask, (0, grow), value=0).clone()
    logprobs = pad(rollout.logprobs, (0, grow), value=0.0).clone() if rollout.logprobs is not None else None
    trunc, new_texts = rollout.truncated.clone(), list(rollout.texts)
    for row, x, cut, text in zip(rows, ids, truncated, texts):
        completion_ids[row] = pad_id
        completion_ids[row, : len(x)] = torch.tensor(x, dtype=completion_ids.dtype)
        mask[row] = 0
        mask[row, : len(x)] = 1
        trunc[row] = cut
        new_texts[row] = text
        if logprobs is not None:
            logprobs[row] = 0.0
    return Rollout(rollout.prompt_ids, rollout.prompt_mask, completion_ids, mask, trunc, new_texts, logprobs)
