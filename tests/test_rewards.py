"""Reward components against hand-written cases, and how RewardScorer combines them."""

from __future__ import annotations

import pytest

from grpo.config.schema import RewardConfig
from grpo.rewards.answers import choice_letter
from grpo.rewards.components import (
    COMPONENTS,
    beam_score,
    correctness,
    format_reward,
    length_penalty,
    solved,
)
from grpo.rewards.scorer import RewardScorer
from grpo.rewards.tiered import normalize, tiered, token_f1

NUM = r"-?\d+(?:\.\d+)?"
LINE = r"\S[^\n]*"


def cols(n, **kw):
    base = dict(
        answer=["0"] * n,
        answer_pattern=[NUM] * n,
        truncated=[False] * n,
        completion_length=[1] * n,
        max_new_tokens=[8] * n,
        tests=[None] * n,
        domain=["math"] * n,
    )
    base.update(kw)
    return base


# ---------------------------------------------------------------------------- correctness
def test_correctness_exact_and_numeric_tolerance():
    completions = ["42", "the answer is 42", "41.95", "43", "no number"]
    gold = ["42"] * 5
    assert correctness(None, completions, answer=gold, answer_pattern=[NUM] * 5) == [1, 1, 0, 0, 0]
    assert correctness(None, completions, answer=gold, answer_pattern=[NUM] * 5, numeric_tolerance=0.1) == [
        1,
        1,
        1,
        0,
        0,
    ]


@pytest.mark.parametrize(
    "completion,letter",
    [
        ("B", "B"),
        ("B.", "B"),
        ("(C)", "C"),
        ("The answer is D.", "D"),
        ("answer: a", "A"),
        ("I pick option C", "C"),
        ("A) because it is largest", "A"),
        ("A cat", None),
        ("none of them", None),
    ],
)
def test_choice_letter(completion, letter):
    assert choice_letter(completion) == letter


def test_correctness_choice_letters():
    completions = ["B", "The answer is (B)", "A", "b) ok", "Banana"]
    assert correctness(None, completions, answer=["B"] * 5, answer_pattern=[LINE] * 5) == [1, 1, 0, 1, 0]
    assert correctness(None, ["(B)"], answer=["(B)"], answer_pattern=[LINE]) == [1]


def test_correctness_takes_the_candidate_files_label():
    out = correctness(
        None, ["12", "12", "13"], answer=["12"] * 3, answer_pattern=[NUM] * 3, candidate_correct=[0.0, None, 1.0]
    )
    assert out == [0.0, 1.0, 1.0]


def test_format_and_length_penalty():
    assert format_reward(
        None, ["12", " 12 ", "12 apples", "12"], answer_pattern=[NUM] * 4, truncated=[False, False, False, True]
    ) == [1, 1, 0, 0]
    # budget 8: free up to 6 tokens, then down to -1 at 8; truncated is -1
    out = length_penalty(
        None,
        ["x"] * 5,
        completion_length=[3, 6, 7, 8, 8],
        max_new_tokens=[8] * 5,
        truncated=[False, False, False, False, True],
    )
    assert out == [0.0, 0.0, -0.5, -1.0, -1.0]


def test_beam_score_reads_the_file_score():
    assert beam_score(None, ["a", "b"], candidate_score=[0.4, None]) == [0.4, 0.0]


def test_solved_runs_tests_for_code_rows_only():
    completions = ["def f(x): return 2*x", "def f(x): return x", "7"]
    out = solved(
        None,
        completions,
        answer=["", "", "7"],
        answer_pattern=[LINE, LINE, NUM],
        tests=[["assert f(2)==4", "assert f(1)==2"], ["assert f(2)==4", "assert f(0)==0"], None],
        execution_timeout=2,
    )
    assert out == [1.0, 0.0, 1.0]


# ---------------------------------------------------------------------------- tiered (seed 003)
def test_normalize_and_f1():
    assert normalize("The  Eiffel Tower!") == "eiffel tower"
    assert token_f1("the big red ball", "red ball") == pytest.approx(0.8)  # P = 2/3 ("the" dropped), R = 1


@pytest.mark.parametrize(
    "completion,gold,pattern,value",
    [
        ("56", "56", NUM, 1.0),  # perfect
        ("about 55 I think", "56", NUM, 0.7),  # near: relative error 1/56 <= 0.1
        ("40, or maybe 56", "56", NUM, 0.4),  # partial: the gold number appears, but not as the answer
        ("12", "56", NUM, 0.2),  # an attempt: a well-formed answer
        ("no idea", "56", NUM, 0.0),  # wrong
        ("", "56", NUM, 0.0),
        ("Paris", "Paris", LINE, 1.0),
        ("paris.", "Paris", LINE, 0.7),  # normalised match
        ("It is Paris of course", "Paris", LINE, 0.4),  # contains
        ("Lyon", "Paris", LINE, 0.2),
        ("B", "B", LINE, 1.0),  # choice letter
        ("The answer is (C)", "B", LINE, 0.2),
    ],
)
def test_tiered_answer_items(completion, gold, pattern, value):
    assert tiered(None, [completion], answer=[gold], answer_pattern=[pattern]) == [value]


def test_tiered_code_items_by_pass_fraction():
    tests = ["assert f(1)==2", "assert f(2)==4", "assert f(0)==0", "assert f(-1)==-2"]
    completions = [
        "def f(x): return 2*x",  # 4/4 -> 1.0
        "def f(x): return 2*x if x > 0 else 1",  # 2/4 -> 0.7 (>= half)
        "def f(x): return 2 if x == 1 else 9",  # 1/4 -> 0.4
        "def g(x): return x",  # runs, passes none -> 0.2
        "def f(x) return",  # does not parse -> 0.0
        "while True: pass",  # timeout -> 0.0
    ]
    out = tiered(None, completions, answer=[""] * 6, answer_pattern=[LINE] * 6, tests=[tests] * 6, execution_timeout=2)
    assert out == [1.0, 0.7, 0.4, 0.2, 0.0, 0.0]


def test_tiered_values_and_rules_are_configurable():
    out = tiered(
        None,
        ["about 55", "Lyon"],
        answer=["56", "Paris"],
        answer_pattern=[NUM, LINE],
        tiers=[10, 5, 3, 1, -1],
        tier_rules=["exact", "normalized", "contains", "nonempty"],
    )
    assert out == [1.0, 1.0]  # 55 is not normalised-equal: no tier until "nonempty"
    out = tiered(None, ["about 55"], answer=["56"], answer_pattern=[NUM], near_tolerance=0.01)
    assert out == [0.2]


# ---------------------------------------------------------------------------- the model
def test_reward_scorer_tiered_logs_correctness_beside_it():
    rm = RewardScorer(RewardConfig(type="tiered"))
    scores = rm(["p"] * 3, ["56", "55", "x"], **cols(3, answer=["56"] * 3))
    assert scores.total.tolist() == pytest.approx([1.0, 0.7, 0.0])
    assert scores.components["correctness"].tolist() == [1.0, 0.0, 0.0]


def test_reward_scorer_lever_with_file_quality():
    rm = RewardScorer(RewardConfig(type="lever", alpha=0.3, beta=1.0, quality_source="file"))
    assert not rm.needs_logp
    scores = rm(
        ["p"] * 2, ["12", "13"], **cols(2, answer=["12"] * 2), candidate_score=[0.5, 0.25], candidate_correct=[1.0, 0.0]
    )
    assert scores.total.tolist() == pytest.approx([0.3 * 0.5 + 1.0, 0.3 * 0.25])
    assert set(scores.components) == {"beam_score", "correctness"}


def test_reward_scorer_lever_with_policy_quality_needs_logp():
    assert RewardScorer(RewardConfig(type="lever", quality_source="policy")).needs_logp


def test_weighted_sum_of_registered_components():
    rm = RewardScorer(RewardConfig(type="weighted", weights={"correctness": 0.7, "format": 0.2, "length_penalty": 0.1}))
    scores = rm(
        ["p"] * 2, ["5", "5 apples"], **cols(2, answer=["5"] * 2, completion_length=[2, 8], truncated=[False, True])
    )
    assert scores.total.tolist() == pytest.approx([0.7 + 0.2, 0.7 - 0.1])
    assert set(scores.components) == {"correctness", "format", "length_penalty"}


def test_registry_names():
    assert {"correctness", "format", "length_penalty", "tiered", "code_exec", "solved", "beam_score", "quality"} <= set(
        COMPONENTS
    )
