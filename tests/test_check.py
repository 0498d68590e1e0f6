"""The step checker (mcts_pref.check): claims, verdicts, limits, chain_sum, registry.

Every case is timed: the checker must answer in under 50 ms even on hostile
input. Each case runs three times with the claim cache cleared and the fastest
run counts, so a scheduler pause on a shared machine is not read as slowness
(a genuinely slow input is slow all three times).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from mcts_pref import check, claims
from mcts_pref.check import (BAD, OK, UNKNOWN, Claim, check_step, check_steps, find_claims, register_task_check,
                             rounds_to, step_verdict, unregister_task_check, verdict_score)
from mcts_pref.tasks import chain_sum as chain_sum_rule

GSM8K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k" / "train.jsonl"
LIMIT_S = 0.05


def timed(fn, *args):
    best, out = float("inf"), None
    for _ in range(3):
        check.equalities.cache_clear()
        t = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t)
    assert best < LIMIT_S, f"{best * 1000:.1f} ms for {str(args)[:80]}"
    return out


def verdicts(step: str) -> list[str]:
    return [c.verdict for c in timed(find_claims, step)]


# ---------------------------------------------------------------- general claims

@pytest.mark.parametrize("step, expected", [
    # a op b = c, chains, precedence, parentheses
    ("3 + 4 = 7", [OK]),
    ("3 + 4 = 8", [BAD]),
    ("3 + 4 + 5 = 12", [OK]),
    ("3 + 4 + 5 = 13", [BAD]),
    ("3 + 4 * 2 = 11", [OK]),
    ("3 + 4 * 2 = 14", [BAD]),               # precedence: * before +
    ("(3 + 4) * 2 = 14", [OK]),
    ("((3 + 4) * (2 - 1)) / 7 = 1", [OK]),
    ("10 - 4 - 3 = 3", [OK]),                 # left-associative
    ("24 / 4 / 2 = 3", [OK]),
    ("2^10 = 1024", [OK]),
    ("2**10 = 1024", [OK]),
    ("2^3^2 = 512", [OK]),                    # right-associative
    ("-2^2 = -4", [OK]),
    ("2^-1 = 0.5", [OK]),
    ("6 x 7 = 42", [OK]),
    ("6x7=42", [OK]),
    ("6 × 7 = 43", [BAD]),
    ("42 ÷ 6 = 7", [OK]),
    ("3 \\times 4 = 12", [OK]),
    ("560//10 = 56", [OK]),
    ("7 − 2 = 5", [OK]),                      # unicode minus
    ("97 – 12 = 85", [OK]),                   # en dash, as GSM8K writes it
    # a = b = c: each adjacent equality is one claim
    ("5 = 5 = 6", [OK, BAD]),
    ("2 * 3 = 6 = 3 + 3", [OK, OK]),
    ("4 * 5 = 20 = 21", [OK, BAD]),
    # a name on the left, then a numeric chain
    ("x = 3 * 4 = 12", [OK]),
    ("Total = 3 * 4 = 13", [BAD]),
    ("The cost is 12 * 3 = 36 dollars.", [OK]),
    # GSM8K calculator annotations (and the prose claim around them)
    ("<<48/2=24>>", [OK]),
    ("<<48/2=25>>", [BAD]),
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.", [OK, OK]),
    ("Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.", [OK, OK]),
    ("she earned 0.2 x 50 = $<<0.2*50=10>>10.", [OK, OK]),
    ("So it cost 192*100=$1920", [BAD]),      # a real error in GSM8K's gold text
    # numbers: thousands separators, decimals, $, %, trailing periods, negatives
    ("1,200 + 300 = 1,500", [OK]),
    ("1,200 + 300 = 1,600", [BAD]),
    ("$12 * 3 = $36.", [OK]),
    ("0.1 + 0.2 = 0.3", [OK]),                # exact, not floating point
    ("1.5 * 2 = 3.0", [OK]),
    (".5 + .25 = .75", [OK]),
    ("20% * 50 = 10", [OK]),                  # % as /100
    ("10/20*100 = 50%", [OK]),                # % as a unit label
    ("10/20*100 = 40%", [BAD]),               # neither reading holds
    ("-3579 - 9376 = -12955", [OK]),
    ("then -633 + 505 = -128", [OK]),
    ("5 - -3 = 8", [OK]),
    ("7 + (-4) = 3", [OK]),
    ("1) 3 + 4 = 7", [OK]),                   # a list number before the claim
    ("(so 3 + 4 = 8)", [BAD]),
    # tolerance: rounded or truncated to the written decimals
    ("10/3 = 3.33", [OK]),
    ("10/3 = 3.3", [OK]),
    ("2/3 = 0.67", [OK]),
    ("2/3 = 0.66", [OK]),
    ("10/3 = 3.34", [BAD]),
    ("10/3 = 3", [BAD]),                      # no decimals written: exact only
    ("1/3 = 33.33%", [OK]),
    ("10/3 ≈ 3.3", [OK]),
    ("176.29 ≈ 176", [OK]),                   # ≈ may round to a whole number
    ("10/3 ≈ 4", [UNKNOWN]),                  # ≈ never says bad
    # not checkable
    ("7", []),
    ("The answer is 7.", []),
    ("Tom starts with 3 apples.", []),
    ("Let x = the number of apples", []),
    ("x = 12", []),
    ("x - 3 = 5", [UNKNOWN]),
    ("2x + 3 = x + 5", [UNKNOWN]),
    ("2 * x = 8", [UNKNOWN]),
    ("7 = 2x + 3", [UNKNOWN]),
    ("26=5+3x", [UNKNOWN]),
    ("half of 10 = 5", [UNKNOWN]),
    ("Day 3 = 4 apples", [UNKNOWN]),
    ("From 8:00 to 11:00, she spends 11:00-8:00 = 3 hours", [UNKNOWN]),
    ("A square quilt is 12 feet per side because √(144) = 12", [UNKNOWN]),
    ("he used 25 / 1/3 = 75 decorations", [UNKNOWN]),   # spacing groups against precedence
    ("24 kids / 6 = 4 kids", [UNKNOWN]),       # units inside the expression
    ("He will read 4 / 3 = 1 and 1/3 hours", [UNKNOWN]),
    ("1/0 = 3", [UNKNOWN]),
    ("2(3 + 4) = 14", [UNKNOWN]),              # implicit multiplication is not read
    ("3 + 4 <= 8", []),
    ("2 ^ 0.5 = 1.41", [UNKNOWN]),
])
def test_claim_verdicts(step, expected):
    assert verdicts(step) == expected


@pytest.mark.parametrize("step, claims", [
    ("3 + 4 = 8", [Claim("3 + 4 = 8", BAD, "lhs 7 != rhs 8")]),
    ("x = 3 * 4 = 12", [Claim("3 * 4 = 12", OK)]),
    ("Natalia sold 48/2 = <<48/2=24>>24 clips.", [Claim("48/2 = 24", OK), Claim("<<48/2=24>>", OK)]),
    ("1/0 = 3", [Claim("1/0 = 3", UNKNOWN, "division by zero")]),
    ("x - 3 = 5", [Claim("x - 3 = 5", UNKNOWN, "words or unknowns in the equation")]),
    ("2 + 2 = 4 and 3 * 3 = 10.", [Claim("2 + 2 = 4", OK), Claim("3 * 3 = 10", BAD, "lhs 9 != rhs 10")]),
])
def test_claim_text_and_reason(step, claims):
    assert timed(find_claims, step) == claims


@pytest.mark.parametrize("exact, written, decimals, ok", [
    (Fraction(10, 3), Fraction("3.33"), 2, True),    # rounded
    (Fraction(2, 3), Fraction("0.67"), 2, True),     # rounded up
    (Fraction(2, 3), Fraction("0.66"), 2, True),     # truncated
    (Fraction(10, 3), Fraction("3.34"), 2, False),
    (Fraction("3.45"), Fraction("3.4"), 1, True),    # a tie may go either way
    (Fraction("3.45"), Fraction("3.5"), 1, True),
    (Fraction("3.5"), Fraction("3.4"), 1, False),
    (Fraction(-10, 3), Fraction("-3.33"), 2, True),
])
def test_rounds_to(exact, written, decimals, ok):
    assert rounds_to(exact, written, decimals) is ok


# ---------------------------------------------------------------- hostile input

@pytest.mark.parametrize("step, reason", [
    ("9^9^9^9 = 1", "exponent too large"),
    ("9**9**9 = 1", "exponent too large"),
    ("2^2048 = 1", "exponent too large"),
    ("1" * 10_000 + " = 1", "step too long"),
    ("1" * 1_500 + " = 1", "number too long"),
    ("3." + "3" * 1_000 + " = 10/3", "number too long"),
    ("(" * 5_000 + "1" + ")" * 5_000 + " = 1", "step too long"),
    ("(" * 900 + "1" + ")" * 900 + " = 1", "expression too long"),
    ("(" * 30 + "1" + ")" * 30 + " = 1", "nested too deeply"),
    ("-" * 100 + "1 = 1", "nested too deeply"),
    ("1+" * 50_000 + "1 = 50001", "step too long"),
    ("1*" * 500 + "1 = 1", "expression too long"),
    ("3 = " + "9" * 500, "number too long"),
    ("0^-1 = 1", "division by zero"),
    ("5 / (3 - 3) = 1", "division by zero"),
    ("x" * 100_000 + " = 1", "step too long"),
])
def test_hostile_input_is_unknown_and_fast(step, reason):
    claims = timed(find_claims, step)
    assert claims and all(c.verdict == UNKNOWN for c in claims)
    assert claims[0].reason == reason


@pytest.mark.parametrize("step", [
    "1=" * 999,
    "=" * 1_999,
    "<<" * 999,
    "<<1=1" * 300,
    "a-" * 999 + "=1",
    "1,000," * 300 + " = 1",
    "((((((((((" * 100,
    "__import__('os').system('echo hi') = 0",
    "".join(chr(c) for c in range(32, 1200)),
    "9" * 100_000,
])
def test_hostile_input_answers_fast(step):
    claims = timed(find_claims, step)
    assert len(claims) <= check.MAX_CLAIMS
    assert BAD not in [c.verdict for c in claims]


def test_many_previous_steps_answer_fast():
    problem = {"source": "gym:chain_sum", "question": "State the final answer to the following arithmetic problem: 1 + 1 ="}
    assert timed(step_verdict, "2 + 2 = 4\n", problem, ["1 + 1 = 2\n"] * 20_000) == OK
    assert timed(step_verdict, "2 + 2 = 4\n", problem, ["1 + 1 = 2 "] * 20_000) == UNKNOWN   # one 200 kB line


def test_model_text_is_never_run():
    # The parser is mcts_pref.claims, the chain_sum rule mcts_pref.tasks.chain_sum, the API mcts_pref.check.
    for module in (check, claims, chain_sum_rule):
        source = Path(module.__file__).read_text()
        assert not re.search(r"(?<![.\w])(eval|exec|sympify|compile)\(", source), module.__name__


# ---------------------------------------------------------------- verdicts

def test_step_verdict_aggregates_claims():
    assert timed(step_verdict, "3 + 4 = 7 and 2 * 2 = 5") == BAD       # any bad
    assert timed(step_verdict, "3 + 4 = 7 and x + 1 = 2") == OK        # ok, none bad
    assert timed(step_verdict, "x + 1 = 2") == UNKNOWN                 # only unknown
    assert timed(step_verdict, "The answer is 7.") == UNKNOWN          # no claim


def test_verdict_score():
    assert [verdict_score(v) for v in (OK, BAD, UNKNOWN)] == [1, -1, 0]
    with pytest.raises(KeyError):
        verdict_score("maybe")


def test_check_steps_on_a_gsm8k_style_solution():
    steps = [
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.",
        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.",
        "So she sold 72 - 24 = 50 more in April than May.",
        "The answer is 72.",
    ]
    assert timed(check_steps, steps) == [OK, OK, BAD, UNKNOWN]
    assert timed(check_steps, steps, {"source": "gsm8k", "task": "math"}) == [OK, OK, BAD, UNKNOWN]


@pytest.mark.parametrize("steps, expected", [
    (["3 + 4 = 7\n", "7 + 1 = 8\n", "The answer is 8."], [OK, OK, UNKNOWN]),
    (["3 + 4 = 7", "7 + 1 = 9"], [OK, BAD]),                        # lines split off a text: each is its own line
    (["3 + 4 = 7 and 10 + ", "5 = 15\n"], [OK, OK]),               # cut by the token cap: the line goes on
    (["3 + 4 = 7 and 10 + ", "5 = 16\n"], [OK, BAD]),
    (["2 * 3 = 6, 4 * 5 = 2", "0\n"], [OK, OK]),                    # "= 2" was "= 20", cut mid-number
    (["7 - 4 = 3\n3", " + 3 = 6\n"], [OK, OK]),                    # a token held a newline and more text
    (["**Step 1:** 7 - 4 = 3\n", "- 3 + 3 = 6\n"], [OK, OK]),       # markdown bold and a list bullet
])
def test_check_steps_reads_whole_lines(steps, expected):
    assert timed(check_steps, steps) == expected


def test_cut_step_claims_at_its_end_are_unknown():
    assert timed(step_verdict, "4 * 5 = 2") == BAD
    claims = check_step("2 * 3 = 6, 4 * 5 = 2", cut=True)
    assert claims == [Claim("2 * 3 = 6", OK), Claim("4 * 5 = 2", UNKNOWN, check.CUT)]
    assert step_verdict("0 and 1 + 1 = 2\n", previous_steps=["2 * 3 = 6, 4 * 5 = 2"]) == OK   # "4 * 5 = 20" here


# ---------------------------------------------------------------- chain_sum

def chain_sum(expression: str) -> dict:
    # The shape `mcts-pref prepare gym:chain_sum` writes.
    return {"id": "chain_sum-s0-1", "question": f"State the final answer to the following arithmetic problem: {expression} =",
            "answer": "0", "task": "math", "source": "gym:chain_sum", "meta": {"expression": expression}}


Q = chain_sum("7 - 4 + 3")


@pytest.mark.parametrize("steps, expected", [
    (["7 - 4 = 3", "3 + 3 = 6", "The answer is 6."], [OK, OK, UNKNOWN]),
    (["7 + 3 = 10", "10 - 4 = 6"], [BAD, BAD]),          # true arithmetic, wrong operands
    (["7 - 4 = 2", "2 + 3 = 5"], [BAD, BAD]),            # false arithmetic, then a wrong running total
    (["7 - 4 + 3 = 6"], [OK]),                           # several terms in one step
    (["3 + 3 = 6"], [BAD]),                              # skipped a term
    (["7 - 4 = 3", "3 - 3 = 0"], [OK, BAD]),             # wrong sign on the next term
    (["7 - 4 = 3, and 3 + 3 = 6."], [OK]),              # two claims in one step
    (["First, 7 minus 4 is 3.", "3 + 3 = 6"], [UNKNOWN, OK]),   # prose may have used terms
    (["First, 7 minus 4 is 3.", "5 + 3 = 8"], [UNKNOWN, BAD]),  # 5 is no running total at all
    (["7 * 1 = 7", "7 - 4 = 3"], [OK, OK]),              # a shape the check cannot read: unknown, not bad
    (["7 - 4 = 3\n", "3 + 3 = 6\n", "The answer is 6."], [OK, OK, UNKNOWN]),   # steps with their newlines
])
def test_chain_sum_running_total(steps, expected):
    assert timed(check_steps, steps, Q) == expected


def test_chain_sum_claims_and_reasons():
    assert check_step("7 + 3 = 10", Q) == [Claim("7 + 3 = 10", OK), Claim("7 + 3 = 10", BAD, "operand +3 is not the next term -4")]
    assert check_step("2 + 3 = 5", Q, ["7 - 4 = 2"])[-1] == Claim("2 + 3 = 5", BAD, "left operand 2 is not the running total 3")
    assert check_step("7 * 1 = 7", Q)[-1] == Claim("7 * 1 = 7", UNKNOWN, "not a +/- chain of numbers")
    assert check_step("x - 4 = 3", Q)[-1].verdict == UNKNOWN
    assert check_step("Let's add them up.", Q) == []


def test_chain_sum_zero_terms_may_be_skipped():
    q = chain_sum("9 + 0 + 4 - 0")
    assert timed(check_steps, ["9 + 4 = 13", "The answer is 13."], q) == [OK, UNKNOWN]
    assert timed(check_steps, ["9 + 0 = 9", "9 + 4 = 13", "13 - 0 = 13"], q) == [OK, OK, OK]
    assert timed(check_steps, ["9 + 4 = 13", "13 + 4 = 17"], q) == [OK, BAD]


def test_chain_sum_reads_a_line_cut_across_steps():
    # A real search path: the first step hit the token cap mid-line.
    q = chain_sum("2 + 4 + 3 + 7")
    steps = ["2 + 4 + 3 + 7 = 2 * 2 + 4 + 3 + ", "7 = 18\n"]
    assert check_step(steps[1], q, steps[:1]) == [
        Claim("2 + 4 + 3 + 7 = 2 * 2 + 4 + 3 + 7", BAD, "lhs 16 != rhs 18"), Claim("2 * 2 + 4 + 3 + 7 = 18", OK),
        Claim("2 + 4 + 3 + 7 = 2 * 2 + 4 + 3 + 7", OK)]
    assert check_steps(steps, q) == [OK, BAD]   # the cut step's left side is whole and follows the question


def test_chain_sum_negative_terms():
    q = chain_sum("5 - -3 + -2")
    assert timed(check_steps, ["5 - -3 = 8", "8 + -2 = 6"], q) == [OK, OK]
    assert timed(check_steps, ["5 + 3 = 8", "8 - 2 = 6"], q) == [OK, OK]   # same signed terms
    assert timed(check_steps, ["5 - 3 = 2"], q) == [BAD]


def test_chain_sum_needs_a_chain_question():
    # Only the task check knows the question: without it, or with another source, the general check alone runs.
    assert step_verdict("7 + 3 = 10") == OK
    assert step_verdict("7 + 3 = 10", {**Q, "source": "gym:basic_arithmetic"}) == OK
    assert step_verdict("7 + 3 = 10", {**Q, "question": "What is 7 - 4 + 3?", "meta": {}}) == OK


def test_chain_sum_gold_rationales_of_real_records_are_ok():
    from mcts_pref.datasets import gym_problems

    from mcts_pref.steps import split_steps

    problems = gym_problems("chain_sum", 40, 3, {"allow_negation": True})
    assert any(" -" in p["meta"]["expression"] for p in problems)   # negative terms are exercised
    for p in problems:
        steps = split_steps(p["rationale"])   # as the search cuts them, newlines kept
        assert check_steps(steps, p) == [OK] * (len(steps) - 1) + [UNKNOWN], p["rationale"]
        assert check_steps(p["rationale"].split("\n"), p) == check_steps(steps, p)


# ---------------------------------------------------------------- registry

@pytest.fixture
def registered():
    keys = []

    def register(key, fn):
        keys.append(key)
        register_task_check(key, fn)

    yield register
    for key in keys:
        unregister_task_check(key)


def test_registry_runs_a_custom_check_by_source_then_task(registered):
    calls = []

    def no_sevens(step, problem, previous_steps):
        calls.append((step, problem["id"], list(previous_steps)))
        return [Claim(step, BAD, "mentions 7")] if "7" in step else []

    registered("my:task", no_sevens)
    problem = {"id": "p", "question": "q", "source": "my:task", "task": "math"}
    assert check_steps(["1 + 1 = 2", "3 + 4 = 7"], problem) == [OK, BAD]
    assert calls == [("1 + 1 = 2", "p", []), ("3 + 4 = 7", "p", ["1 + 1 = 2"])]
    assert step_verdict("3 + 4 = 7", {"id": "p", "task": "my:task"}) == BAD       # found by task too
    assert step_verdict("3 + 4 = 7", {"id": "p", "source": "other", "task": "math"}) == OK


def test_registry_unregister_removes_the_check(registered):
    registered("my:other", lambda step, problem, prev: [Claim(step, BAD, "always")])
    assert step_verdict("1 + 1 = 2", {"source": "my:other"}) == BAD
    unregister_task_check("my:other")
    assert step_verdict("1 + 1 = 2", {"source": "my:other"}) == OK


# ---------------------------------------------------------------- real GSM8K gold text

@pytest.mark.skipif(not GSM8K.exists(), reason="../shared/data/gsm8k is not here")
def test_gsm8k_gold_annotations_are_ok():
    annotations, prose = Counter(), Counter()
    for line in GSM8K.read_text().splitlines():
        for step in json.loads(line)["answer"].split("\n")[:-1]:
            for claim in find_claims(step):
                (annotations if claim.text.startswith("<<") else prose)[claim.verdict] += 1
    n_ann, n_prose = sum(annotations.values()), sum(prose.values())
    print(f"\nGSM8K annotations: {dict(annotations)} of {n_ann}; prose claims: {dict(prose)} of {n_prose}")
    assert n_ann > 20_000
    assert annotations[OK] / n_ann >= 0.999 and annotations[BAD] == 0
    # The few prose claims that are bad are errors in the gold text (e.g. "192*100=$1920").
    assert prose[BAD] / n_prose < 0.003 and prose[OK] / n_prose > 0.8
