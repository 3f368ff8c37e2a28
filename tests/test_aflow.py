"""AFlow workflows: the validator, the operators, the sandboxed runner and its channel, the reward
components and the prompt builder, against a real OpenAI-compatible server (tests/helpers/openai_server.py)."""

import socket

import pytest

from grpo.config.errors import ConfigError
from grpo.config.schema import ExecutorConfig
from grpo.rewards.aflow import runner
from grpo.rewards.aflow.components import (
    aflow_code_quality,
    aflow_correctness,
    aflow_efficiency,
    aflow_tiered,
    workflow_answers,
)
from grpo.rewards.aflow.operators import OPERATORS, check_inputs
from grpo.rewards.aflow.validator import REASONS, patch_indentation, validate
from grpo.rewards.executor import ExecutorClient, ExecutorReply
from grpo.rewards.sandbox import Limits
from grpo.tasks.aflow import WorkflowPrompts, load_descriptions
from grpo.tasks.base import Example
from tests.helpers.openai_server import OpenAIServer

TWO_CALLS = "def solve(problem):\n    a = AnswerGenerate(problem)\n    return Format(problem, a)\n"
NO_OPERATOR = "def solve(problem):\n    return '33'\n"
SYNTAX = "def solve(problem)\n    return AnswerGenerate(problem)\n"
PROBLEM = "What is 12 + 7 * 3?"


@pytest.fixture(scope="module")
def server():
    with OpenAIServer() as s:
        yield s


@pytest.fixture
def executor(server, tmp_path):
    c = ExecutorClient(ExecutorConfig(model="test-executor", base_url=server.url, timeout=10.0, cache="off"))
    yield c
    c.close()


# ---------------------------------------------------------------------------- the validator
@pytest.mark.parametrize(
    "source, domain, reason",
    [
        (SYNTAX, "math", "syntax"),
        ("", "math", "syntax"),
        ("import os\ndef solve(p):\n    return AnswerGenerate(p)\n", "math", "import"),
        ("x = 1\ndef solve(p):\n    return AnswerGenerate(p)\n", "math", "top_level"),
        ("def run(p):\n    return AnswerGenerate(p)\n", "math", "entry_point"),
        ("async def solve(p):\n    return AnswerGenerate(p)\n", "math", "top_level"),
        ("def solve(p, q):\n    return AnswerGenerate(p)\n", "math", "entry_point"),
        ("def solve(p):\n    return eval(p)\n", "math", "forbidden_name"),
        ("def solve(p):\n    return p.__class__\n", "math", "forbidden_name"),
        ("def solve(p):\n    return Solver(p)\n", "math", "unknown_operator"),
        ("def solve(p):\n    return AnswerGenerate(p, p)\n", "math", "operator_arguments"),
        ("def solve(p):\n    return Format(p)\n", "math", "operator_arguments"),
        (NO_OPERATOR, "math", "no_operator"),
        ("def solve(p):\n    return Test(p, p)\n", "math", "constraint_test_domain"),
        ("def solve(p):\n    return Programmer(p)\n", "qa", "constraint_programmer_domain"),
        ("def solve(p):\n    return ScEnsemble([AnswerGenerate(p)], p)\n", "math", "constraint_ensemble_size"),
        ("def solve(p):\n" + "    p = Custom(p)\n" * 9 + "    return p\n", "math", "constraint_call_sites"),
    ],
)
def test_the_validator_refuses_with_a_reason(source, domain, reason):
    check = validate(source, domain)
    assert not check.ok and check.reason == reason, check
    assert check.reason in REASONS


def test_the_validator_accepts_workflows_and_lists_their_operators():
    ok = validate(TWO_CALLS, "math")
    assert ok.ok and ok.operators == ("AnswerGenerate", "Format")
    helper = "def pick(xs):\n    return xs[0]\n\ndef solve(p):\n    return pick([Programmer(p), Test(p, p)])\n"
    assert validate(helper, "code").ok
    ensemble = "def solve(p):\n    s = [AnswerGenerate(p) for _ in range(3)]\n    return ScEnsemble(s, p)\n"
    assert validate(ensemble, "math").ok
    assert validate("def solve(p):\n    return Test(p, p)\n", None).ok  # no domain: no domain constraint


def test_operator_inputs_are_checked_by_the_parent():
    assert check_inputs("AnswerGenerate", {"input": "x"}) is None
    assert "unknown operator" in check_inputs("Shell", {"input": "x"})
    assert "missing" in check_inputs("Format", {"problem": "x"})
    assert "list of texts" in check_inputs("ScEnsemble", {"solutions": "a", "problem": "x"})
    assert "text" in check_inputs("Custom", {"input": 3})
    assert set(OPERATORS) == {"Custom", "AnswerGenerate", "ScEnsemble", "Programmer", "Test", "Format", "Review"} | {
        "Revise"
    }


# ---------------------------------------------------------------------------- the runner
def test_two_operators_return_the_executors_answer_and_are_counted(server, executor):
    before = server.requests
    result = runner.run_workflow(TWO_CALLS, PROBLEM, "math", executor, Limits(timeout=20))
    assert result.status == "ok" and result.answer == "33", result
    assert result.calls == 2 and server.requests - before == 2
    assert result.prompt_tokens > 0 and result.completion_tokens == 2  # "33" twice: one word each
    programmer = runner.run_workflow("def solve(p):\n    return Programmer(p)\n", PROBLEM, "math", executor, Limits())
    assert programmer.answer == "33"  # the executor's program ran inside the sandbox


def test_the_workflow_cannot_reach_the_server_itself(server, executor):
    """Validation aside (imports are refused before), the sandbox refuses the socket."""
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    source = (
        "import socket\n"
        "def solve(problem):\n"
        f"    s = socket.create_connection(('127.0.0.1', {port}))\n"
        "    s.sendall(b'POST /v1/chat/completions HTTP/1.1\\r\\n\\r\\n')\n"
        "    return 'reached'\n"
    )
    before = server.requests
    result = runner.execute(source, PROBLEM, executor, Limits(timeout=10))
    assert result.status == "failed" and "socket" in result.error and "not allowed" in result.error, result
    assert result.answer is None and server.requests == before
    with socket.create_connection(("127.0.0.1", port), timeout=5):  # the server itself was up all along
        pass


def test_a_workflow_that_loops_forever_is_stopped_and_scores_low(executor):
    source = "def solve(problem):\n    a = AnswerGenerate(problem)\n    while True:\n        pass\n"
    result = runner.run_workflow(source, PROBLEM, "math", executor, Limits(timeout=1.5))
    assert result.status == "timeout" and result.seconds < 5, result
    columns = dict(problem=[PROBLEM], domain=["math"], answer=["33"], answer_pattern=[r"-?\d+"], executor=executor)
    columns.update(execution_timeout=1.5)
    assert aflow_correctness([""], [source], **columns) == [0.0]
    assert aflow_tiered([""], [source], **columns) == [0.0]
    assert aflow_code_quality([""], [source], **columns) == [0.5]  # valid, but it never finished


def test_operator_calls_past_the_limit_are_refused(server, executor):
    source = (
        "def solve(problem):\n"
        "    n = 0\n"
        "    for i in range(40):\n"
        "        try:\n"
        "            AnswerGenerate(problem)\n"
        "        except Exception:\n"
        "            n = n + 1\n"
        "    return str(n)\n"
    )
    before = server.requests
    result = runner.run_workflow(source, PROBLEM, "math", executor, Limits(timeout=30))
    assert result.status == "ok" and result.calls == runner.MAX_CALLS
    assert result.answer == str(40 - runner.MAX_CALLS) and server.requests - before == runner.MAX_CALLS


class Scripted:
    """An executor whose reply depends on the operator (the instruction its prompt opens with)."""

    def __init__(self, replies: dict[str, str]):
        self.replies, self.prompts = replies, []

    def complete(self, prompt, *, system=None):
        self.prompts.append(prompt)
        name = next(n for n, op in OPERATORS.items() if prompt.startswith(op.instruction or "Write it."))
        return ExecutorReply(self.replies[name], 1, 1)


def test_test_runs_the_executors_checks_in_the_sandbox_and_revises_once():
    source = "def solve(problem):\n    return Test(problem, Custom(problem, 'Write it.'))\n"
    wrong, right = "def f(x):\n    return x * 3\n", "```python\ndef f(x):\n    return 2 * x\n```"
    checks = "```python\nassert f(2) == 4\n```"
    executor = Scripted({"Custom": wrong, "Test": checks, "Revise": right})
    result = runner.run_workflow(source, "f(x): double x", "code", executor, Limits(timeout=20))
    assert result.status == "ok" and result.answer == right and result.calls == 3, result
    assert "AssertionError" in executor.prompts[-1]  # the failed check is Revise's feedback
    columns = dict(problem=["f(x): double x"], domain=["code"], answer=[""], answer_pattern=[r"[\s\S]+"])
    tests = [["assert f(2) == 4", "assert f(5) == 10"]]
    assert aflow_correctness([""], [source], tests=tests, executor=executor, **columns) == [1.0]
    passing = Scripted({"Custom": right, "Test": checks, "Revise": wrong})
    kept = runner.run_workflow(source, "f(x): double x", "code", passing, Limits(timeout=20))
    assert kept.answer == right and kept.calls == 2  # the checks pass: no revision


# ---------------------------------------------------------------------------- the components
def test_a_valid_operator_calling_workflow_outscores_invalid_ones(executor):
    workflows = [TWO_CALLS, "def solve(problem):\n    return AnswerGenerate(problem)\n", NO_OPERATOR, SYNTAX]
    columns = dict(
        problem=[PROBLEM] * 4,
        domain=["math"] * 4,
        answer=["33"] * 4,
        answer_pattern=[r"-?\d+(?:\.\d+)?"] * 4,
        tests=[None] * 4,
        executor=executor,
    )
    correct = aflow_correctness([""] * 4, workflows, **columns)
    efficient = aflow_efficiency([""] * 4, workflows, **columns)
    quality = aflow_code_quality([""] * 4, workflows, **columns)
    tiered = aflow_tiered([""] * 4, workflows, **columns)
    assert correct == [1.0, 1.0, 0.0, 0.0]
    assert efficient[1] > efficient[0] > 0 and efficient[2:] == [0.0, 0.0]  # one call beats two
    tokens = len(OPERATORS["AnswerGenerate"].prompt({"input": PROBLEM}).split()) + 1  # the server counts words
    assert efficient[1] == pytest.approx(0.5 / 1 + 0.5 * (1 - tokens / 4096))  # one call, its tokens of 4096
    assert quality == [1.0, 1.0, 0.0, 0.0]
    assert tiered == [1.0, 1.0, 0.0, 0.0]
    assert workflow_answers(workflows, **columns) == ["33", "33", "", ""]
    counts = executor.drain_stats().metrics()  # each batch counted once, however many components read it
    assert counts["reward/aflow_runs/ok"] == 2
    assert counts["reward/aflow_invalid/no_operator"] == 1 and counts["reward/aflow_invalid/syntax"] == 1


@pytest.mark.parametrize(
    "broken, patched",
    [
        (  # indented as a whole
            "    def solve(problem):\n        a = AnswerGenerate(problem)\n        return a\n",
            "def solve(problem):\n    a = AnswerGenerate(problem)\n    return a\n",
        ),
        (  # 2 then 4 spaces on one level: "unexpected indent"
            "def solve(problem):\n  a = AnswerGenerate(problem)\n    b = Format(problem, a)\n  return b\n",
            "def solve(problem):\n    a = AnswerGenerate(problem)\n    b = Format(problem, a)\n    return b\n",
        ),
        (  # a dedent to a width never opened: "unindent does not match any outer indentation level"
            "def solve(problem):\n        a = AnswerGenerate(problem)\n        if a:\n"
            "            a = Format(problem, a)\n    return a\n",
            "def solve(problem):\n    a = AnswerGenerate(problem)\n    if a:\n        a = Format(problem, a)\n"
            "    return a\n",
        ),
        (  # the body at column 0: "expected an indented block"
            "def solve(problem):\nanswer = AnswerGenerate(problem)\nreturn answer\n",
            "def solve(problem):\n    answer = AnswerGenerate(problem)\n    return answer\n",
        ),
        (  # the last line fell out of the function: it parses, but the top level holds a statement
            "def solve(problem):\n    answer = AnswerGenerate(problem)\nreturn answer\n",
            "def solve(problem):\n    answer = AnswerGenerate(problem)\n    return answer\n",
        ),
    ],
)
def test_indentation_faults_are_patched_by_hand_computed_repairs(broken, patched):
    assert not validate(broken, "math").ok
    assert patch_indentation(broken) == patched
    assert validate(patched, "math").ok


def test_what_indentation_does_not_explain_is_not_patched():
    assert patch_indentation(TWO_CALLS) is None  # nothing to patch
    assert patch_indentation("def solve(problem):\n\treturn AnswerGenerate(problem)\n") is None  # tabs parse
    assert patch_indentation(SYNTAX) is None  # a missing colon is not indentation
    assert patch_indentation("x = 1\ndef solve(problem):\n    return AnswerGenerate(problem)\n") is None


def test_a_patched_workflow_runs_only_when_patching_is_on_and_is_counted(executor):
    broken = "def solve(problem):\n  a = AnswerGenerate(problem)\n    return Format(problem, a)\n"
    columns = dict(problem=[PROBLEM] * 2, domain=["math"] * 2, answer=["33"] * 2, tests=[None] * 2, executor=executor)
    columns["answer_pattern"] = [r"-?\d+"] * 2
    workflows = [broken, NO_OPERATOR]
    assert aflow_correctness([""] * 2, workflows, **columns) == [0.0, 0.0]
    off = executor.drain_stats().metrics()
    assert off["reward/aflow_invalid/syntax"] == 1 and "reward/aflow_patched/indentation" not in off
    again = list(workflows)  # a new step's list (the same list object is counted once)
    assert aflow_correctness([""] * 2, again, **columns, patch_indentation=True) == [1.0, 0.0]
    on = executor.drain_stats().metrics()
    assert on["reward/aflow_patched/indentation"] == 1 and on["reward/aflow_runs/ok"] == 1
    assert on["reward/aflow_invalid/no_operator"] == 1 and "reward/aflow_invalid/syntax" not in on


def test_code_items_run_the_workflows_answer_against_the_tests(server, tmp_path):
    cfg = ExecutorConfig(model="test-executor", base_url=server.url, cache="off")
    client = ExecutorClient(cfg)
    source = "def solve(problem):\n    return Custom(problem, 'Write it.')\n"
    columns = dict(
        problem=["f(x): double x"], domain=["code"], answer=[""], answer_pattern=[r"[\s\S]+"], executor=client
    )
    try:  # the server answers "42" to a prompt without arithmetic: not a program that passes
        assert aflow_correctness([""], [source], tests=[["assert f(2) == 4"]], **columns) == [0.0]
        assert aflow_tiered([""], [source], tests=[["assert f(2) == 4"]], **columns) == [0.2]  # it ran: an attempt
    finally:
        client.close()


def test_the_components_need_the_executor():
    with pytest.raises(ValueError, match="reward.executor"):
        aflow_correctness([""], [TWO_CALLS], problem=["x"], domain=["math"], answer=["1"], answer_pattern=["1"])


# ---------------------------------------------------------------------------- the prompts
def test_the_prompt_carries_descriptions_and_the_best_workflows_per_domain():
    descriptions = load_descriptions("experiments/data/aflow/operators.yaml")
    assert set(descriptions) == set(OPERATORS)
    prompts = WorkflowPrompts(descriptions, num_examples=2)
    math_ex, qa_ex = Example("What is 1+1?", "2", "math"), Example("Capital?", "Paris", "qa")
    first = prompts.build(math_ex)
    assert "AnswerGenerate(input):" in first and first.endswith("Problem: What is 1+1?\nWorkflow:\n")
    assert "Best workflows" not in first
    prompts.observe([math_ex], ["wf-a", "wf-b", "wf-c", "wf-zero"], [0.5, 0.9, 0.7, 0.0], repeats=4)
    prompts.observe([math_ex], ["wf-a"], [0.95], repeats=1)  # a better score moves a known workflow up
    shown = prompts.build(math_ex)
    assert "Best workflows:\nwf-a\nwf-b\n" in shown and "wf-c" not in shown and "wf-zero" not in shown
    assert "Best workflows" not in prompts.build(qa_ex)  # per domain
    prompts.limit(len(first) + 5, len)  # room for no example: the prompt stays within the context
    assert prompts.build(math_ex) == first
    assert WorkflowPrompts(None, 0).build(math_ex) == "Write def solve(problem) that calls operators.\n" + (
        "Problem: What is 1+1?\nWorkflow:\n"
    )


def test_descriptions_file_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="reward.executor.operator_descriptions_path.*no such file"):
        load_descriptions(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "ops.yaml"
    bad.write_text("Shell:\n  interface: Shell(cmd)\n  description: runs it\n")
    with pytest.raises(ConfigError, match="'Shell', not an operator"):
        load_descriptions(str(bad))


def test_task_aflow_needs_a_reward_that_runs_the_workflow():
    from grpo.compose import compose

    base = ["+experiment=aflow_tiny"]
    assert compose(base).cfg.task.name == "aflow"
    with pytest.raises(ConfigError, match="reward.weights.*aflow_correctness"):
        compose([*base, "reward.type=lever", "reward.alpha=0", "reward.beta=0"])
    with pytest.raises(ConfigError, match="rollout.prompt_optimizer.enabled.*task=aflow only"):
        compose(["rollout.prompt_optimizer.enabled=true"])  # numgame: the switch would do nothing
    with pytest.raises(ConfigError, match="operator_descriptions_path"):
        compose(
            [*base, "rollout.operator_prompt_enhancer.enabled=true", "reward.executor.operator_descriptions_path=x"]
        )


def test_under_task_aflow_the_seeds_reward_names_score_the_executed_workflow(server):
    """conf/task/aflow.yaml maps correctness / efficiency / code_quality and reward.type=tiered (seed 003)
    to the workflow's components: a refused workflow takes the lowest tier."""
    from grpo.compose import compose
    from grpo.rewards.scorer import RewardScorer

    columns = dict(problem=[PROBLEM] * 2, domain=["math"] * 2, answer=["33"] * 2, answer_pattern=[r"-?\d+"] * 2)
    columns.update(tests=[None] * 2, truncated=[False] * 2, completion_length=[10] * 2, max_new_tokens=[64] * 2)
    for reward, expected in (("tiered", [1.0, 0.0]), ("weighted", [0.7 + 0.2 * 0.997 + 0.1, 0.0])):
        cfg = compose(
            [
                "+experiment=aflow_tiny",
                f"reward={reward}",
                f"reward.executor.base_url={server.url}",
                "reward.executor.cache=off",
            ]
        ).cfg
        scorer = RewardScorer(cfg.reward)
        try:
            scores = scorer(["", ""], [TWO_CALLS.replace("Format(problem, a)", "a"), SYNTAX], **columns)
        finally:
            scorer.executor.close()
        assert scores.total.tolist() == pytest.approx(expected, abs=1e-3), reward
