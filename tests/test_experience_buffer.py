"""The experience buffer (grpo/rollout/experience.py) and seed 004's grpo_top_k draw, as pure functions:
what is kept, what is evicted, what a group gets replayed, and the config rules of the new keys."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from grpo.compose import compose
from grpo.config.errors import ConfigError
from grpo.rollout.engine import Rollout
from grpo.rollout.experience import (
    ExperienceBuffer,
    completion_tokens,
    groups_to_replay,
    replace_completions,
)
from grpo.stages.candidate_groups import draw, grpo_top_k


def contents(buf: ExperienceBuffer) -> list[tuple[str, str, float]]:
    return [(r.prompt, r.completion, r.reward) for r in buf.rows()]


def test_the_buffer_fills_from_many_prompts_not_one_group():
    """TRL's replay buffer replaced whole groups under one key and ended up holding one group."""
    buf = ExperienceBuffer(buffer_size=100, min_reward=0.0, per_prompt=2)
    for i in range(10):  # ten GRPO groups of G=4, each with two successes
        prompt = f"p{i}"
        buf.add([prompt] * 4, [f"a{i}", f"b{i}", f"c{i}", f"d{i}"], [1.0, 0.0, 0.5, 0.0])
    assert sorted(buf.prompts()) == sorted(f"p{i}" for i in range(10))
    assert len(buf) == 20  # per_prompt rows of every group
    assert all(buf.best_for(f"p{i}").completion == f"a{i}" for i in range(10))
    assert buf.best_for("never seen") is None


def test_only_rows_above_min_reward_enter():
    buf = ExperienceBuffer(buffer_size=10, min_reward=0.5, per_prompt=5)
    assert buf.add(["p"] * 4, ["a", "b", "c", "d"], [0.5, 0.2, 0.51, float("nan")]) == 1
    assert contents(buf) == [("p", "c", 0.51)]


def test_per_prompt_cap_keeps_that_prompts_best_rows():
    buf = ExperienceBuffer(buffer_size=10, per_prompt=2)
    buf.add(["p"] * 5, ["a", "b", "c", "d", "e"], [0.3, 0.9, 0.5, 0.9, 0.1])
    # 0.9 (b) and 0.9 (d) are the best two; among equals the older (b) ranks first
    assert contents(buf) == [("p", "b", 0.9), ("p", "d", 0.9)]
    assert buf.best_for("p").completion == "b"


def test_a_full_buffer_evicts_its_lowest_reward_for_a_better_row():
    buf = ExperienceBuffer(buffer_size=3, per_prompt=1)
    buf.add(["p1", "p2", "p3"], ["a", "b", "c"], [0.6, 0.2, 0.9])
    assert buf.add(["p4"], ["d"], [0.1]) == 0  # worse than the worst: refused
    assert "p4" not in buf.prompts()
    assert buf.add(["p4"], ["d"], [0.7]) == 1  # evicts p2's 0.2
    assert contents(buf) == [("p3", "c", 0.9), ("p4", "d", 0.7), ("p1", "a", 0.6)]


def test_equal_rewards_spread_over_prompts_instead_of_freezing():
    """0/1 rewards: a full buffer of successes still takes prompts it does not cover."""
    buf = ExperienceBuffer(buffer_size=4, per_prompt=2)
    buf.add(["p1", "p1", "p2", "p2"], ["a", "b", "c", "d"], [1.0] * 4)
    assert buf.add(["p3"], ["e"], [1.0]) == 1  # evicts the newest row of a prompt with two: p2's d
    assert contents(buf) == [("p1", "a", 1.0), ("p1", "b", 1.0), ("p2", "c", 1.0), ("p3", "e", 1.0)]
    assert buf.add(["p3"], ["f"], [1.0]) == 0  # p3 would hold 2 and p1 1: no better spread
    assert buf.add(["p4"], ["g"], [1.0]) == 1  # evicts p1's b (the only prompt left with two)
    assert sorted(buf.prompts()) == ["p1", "p2", "p3", "p4"] and len(buf) == 4


def test_a_completion_is_kept_once_with_its_best_reward():
    buf = ExperienceBuffer(buffer_size=5, per_prompt=3)
    buf.add(["p", "p", "p"], ["a", "a", "b"], [0.5, 0.4, 0.6])
    assert contents(buf) == [("p", "b", 0.6), ("p", "a", 0.5)]
    buf.add(["p"], ["a"], [0.8])
    assert contents(buf) == [("p", "a", 0.8), ("p", "b", 0.6)] and len(buf) == 2


def test_off_means_nothing_is_kept_and_bad_sizes_are_refused():
    buf = ExperienceBuffer(buffer_size=0)
    assert buf.add(["p"], ["a"], [1.0]) == 0 and len(buf) == 0
    with pytest.raises(ValueError, match="per_prompt >= 1"):
        ExperienceBuffer(buffer_size=3, per_prompt=0)
    with pytest.raises(ValueError, match="differ in length"):
        ExperienceBuffer(3).add(["p"], ["a", "b"], [1.0])


def test_state_round_trips_through_json_and_goes_on_identically():
    def feed(buf, start, stop):
        for i in range(start, stop):  # rewards that tie and that evict
            buf.add([f"p{i % 7}"] * 3, [f"x{i}", f"y{i}", f"z{i}"], [(i * 37 % 11) / 10, 1.0, 0.0])

    a = ExperienceBuffer(buffer_size=6, min_reward=0.1, per_prompt=2)
    feed(a, 0, 20)
    state = json.loads(json.dumps(a.state_dict()))  # plain data
    b = ExperienceBuffer(buffer_size=6, min_reward=0.1, per_prompt=2)
    b.load_state_dict(state)
    assert b.rows() == a.rows()
    feed(a, 20, 40)
    feed(b, 20, 40)
    assert b.rows() == a.rows() and b.state_dict() == a.state_dict()


def test_groups_to_replay_hand_computed():
    rewards = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    # G = 4: groups [0,0,0,1] (spread), [1,1,0,1] (spread), [0.5]*4 (flat)
    assert groups_to_replay(rewards, 4, [1.0, 1.0, 0.9]).tolist() == [False, False, True]
    assert groups_to_replay(rewards, 4, [1.0, 1.0, 0.5]).tolist() == [False, False, False]  # not higher
    assert groups_to_replay(rewards, 4, [None, None, None]).tolist() == [False, False, False]
    # G = 3: [0,0,0] flat, [1,1,1] flat, [0,1,0.5], [0.5,0.5,0.5] flat
    assert groups_to_replay(rewards, 3, [1.0, 1.0, 1.0, None]).tolist() == [True, False, False, False]


def test_completion_tokens_end_with_eos_or_are_truncated():
    assert completion_tokens([5, 6], eos_id=0, max_new_tokens=4) == ([5, 6, 0], False)
    assert completion_tokens([5, 6, 7], eos_id=0, max_new_tokens=3) == ([5, 6, 7], True)  # no room for EOS
    assert completion_tokens([5, 6, 7, 8], eos_id=0, max_new_tokens=3) == ([5, 6, 7], True)


def test_replace_completions_widens_and_drops_sampler_logprobs():
    ids = torch.tensor([[3, 0, 9], [4, 4, 0]])  # pad 9, EOS 0
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    r = Rollout(
        torch.ones(2, 2, dtype=torch.long),
        torch.ones(2, 2, dtype=torch.long),
        ids,
        mask,
        torch.tensor([False, False]),
        ["a", "bb"],
        logprobs=torch.tensor([[-0.1, -0.2, 0.0], [-0.3, -0.4, -0.5]]),
    )
    out = replace_completions(r, [0], [[7, 7, 7, 0]], [False], ["ccc"], pad_id=9)
    assert out.completion_ids.tolist() == [[7, 7, 7, 0], [4, 4, 0, 9]]
    assert out.completion_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert out.texts == ["ccc", "bb"] and out.truncated.tolist() == [False, False]
    torch.testing.assert_close(out.logprobs, torch.tensor([[0.0] * 4, [-0.3, -0.4, -0.5, 0.0]]))
    assert ids.tolist() == [[3, 0, 9], [4, 4, 0]]  # the input is untouched
    shorter = replace_completions(r, [1], [[5, 6]], [True], ["x"], pad_id=9)
    assert shorter.completion_ids.tolist() == [[3, 0, 9], [5, 6, 9]] and shorter.truncated.tolist() == [False, True]
    assert shorter.completion_mask.tolist() == [[1, 1, 0], [1, 1, 0]]


def test_draw_takes_every_candidate_before_repeating_one():
    g = torch.Generator().manual_seed(0)
    for k, G in [(3, 4), (5, 4), (1, 4), (2, 8)]:
        picks = draw(k, G, g)
        assert len(picks) == G and set(picks) <= set(range(k))
        counts = [picks.count(i) for i in range(k)]
        assert max(counts) - min(counts) <= 1 if k <= G else len(set(picks)) == G


def _ctx(early, late, switch_epoch, steps_per_epoch=10):
    top_k = SimpleNamespace(early=early, late=late, switch_epoch=switch_epoch)
    return SimpleNamespace(
        cfg=SimpleNamespace(schedule=SimpleNamespace(grpo_top_k=top_k)),
        derived=SimpleNamespace(steps_per_epoch=steps_per_epoch),
    )


def test_grpo_top_k_early_before_the_switch_epoch_late_after():
    ctx = _ctx(3, 5, 1.5)  # switch at step 15 of 10-step epochs
    assert [grpo_top_k(ctx, s) for s in (0, 14, 15, 40)] == [3, 3, 5, 5]
    assert [grpo_top_k(_ctx(3, None, 1.0), s) for s in (0, 99)] == [3, 3]  # no late: early throughout
    assert grpo_top_k(_ctx(None, None, 1.0), 0) is None  # every candidate
    assert grpo_top_k(_ctx(2, 4, 0.0), 0) == 4  # switch_epoch 0: late from the start


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["rollout.experience_buffer.buffer_size=-1"], "buffer_size=-1: must be >= 0"),
        (["rollout.experience_buffer.per_prompt=0"], "per_prompt=0: must be >= 1"),
        (["rollout.candidates=beam"], "rollout.candidates='beam': must be one of policy, file"),
        (["rollout.candidates=file"], "file needs task.candidates_path"),
        (["schedule.grpo_top_k.early=3"], "needs rollout.candidates=file"),
        (["schedule.grpo_top_k.late=5"], "grpo_top_k.late=5: needs schedule.grpo_top_k.early"),
        (
            ["+experiment=lever_plan1", "rollout.candidates=file", "schedule.grpo_top_k.early=0"],
            "early=0: must be >= 1",
        ),
        (
            [
                "+experiment=lever_plan1",
                "rollout.candidates=file",
                "schedule.grpo_top_k.early=3",
                "schedule.grpo_top_k.late=0",
            ],
            "late=0: must be >= 1",
        ),
        (["schedule.grpo_top_k.switch_epoch=-1"], "switch_epoch=-1.0: must be >= 0"),
    ],
)
def test_bad_values_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compose(overrides)


def test_lever_experiments_can_draw_grpo_groups_from_the_file():
    cfg = compose(
        [
            "+experiment=lever_plan1",
            "rollout.candidates=file",
            "schedule.grpo_top_k.early=3",
            "schedule.grpo_top_k.late=5",
        ]
    ).cfg
    assert cfg.rollout.candidates == "file" and cfg.schedule.grpo_top_k.late == 5
