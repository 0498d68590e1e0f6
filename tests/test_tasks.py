"""Answer extraction, normalisation and equivalence (mcts_pref.tasks).

Expected values are worked out by hand from the rules in tasks/math.py and
tasks/mcq.py. Symbolic cases share one math-verify worker process (about a
second to start); everything else never starts it.
"""

from __future__ import annotations

import time
from fractions import Fraction

import pytest

from mcts_pref.records import MctsPrefError
from mcts_pref.tasks import check_answer, extract_answer, is_answer_line, score
from mcts_pref.tasks import math as tmath
from mcts_pref.tasks import verify

# ---------------------------------------------------------------- math extraction


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Step 1: 2 + 3 = 5.\nThe answer is 5.", "5"),
        ("the answer is 7", "7"),  # case-insensitive
        ("THE FINAL ANSWER IS: 12", "12"),
        ("The answer is 3. Then the answer is 4.", "4"),  # last statement wins
        ("The answer is $1,000.", "1000"),
        ("The answer is \\$18.00.", "18.00"),
        ("The answer is 50%.", "50"),
        ("The answer is 25\\%", "25"),
        ("The answer is 18 dollars.", "18"),
        ("The answer is 30 minutes", "30"),
        ("The answer is 5 cm^2.", "5"),
        ("The answer is 12 apples.", "12"),  # a number then plain words: the number
        ("The answer is 90^\\circ.", "90"),
        ("The answer is \\text{12 cm}.", "12"),
        ("The answer is x = 5.", "5"),
        ("The answer is **42**", "42"),
        ("The answer is 3.50", "3.50"),
        ("The answer is \u22123", "-3"),  # unicode minus
        ("The answer is $\\boxed{\\dfrac{1}{2}}$.", "\\frac{1}{2}"),
        ("The answer is \\left( 1, 2 \\right).", "( 1, 2 )"),
        ("The answer is 2 pi", "2 pi"),  # "pi" is part of the value, not a unit
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"),
        ("#### 1,234", "1234"),
        ("so \\boxed{\\frac{\\sqrt{3}}{2}} is it", "\\frac{\\sqrt{3}}{2}"),
        ("first \\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed 7", "7"),
        ("\\boxed{unclosed but 41 here", "41"),  # unbalanced box -> last number
        ("She has 5 apples and 3 pears, so 8 fruits in all", "8"),
        ("the total is -12.5 degrees", "-12.5"),
        ("no digits at all", None),
        ("The answer is", None),  # nothing after the phrase, nothing else
        ("", None),
    ],
)
def test_extract_math(text, expected):
    assert extract_answer(text) == expected


def test_answer_is_beats_boxed_and_hashes():
    text = "\\boxed{1}\n#### 2\nThe answer is 3."
    assert extract_answer(text) == "3"
    assert extract_answer("\\boxed{1}\n#### 2") == "2"


def test_normalize_is_idempotent():
    for raw in ["x = 18 dollars", "$1,000.", "\\text{5 cm}", "{7}", "\\dfrac{1}{2}", "12 more apples"]:
        once = tmath.normalize(raw)
        assert tmath.normalize(once) == once


# ---------------------------------------------------------------- numeric equivalence


@pytest.mark.parametrize(
    "pred, gold, correct",
    [
        ("3.50", "3.5", True),
        ("1,000", "1000", True),
        ("1/2", "0.5", True),
        ("\\frac{1}{2}", "0.5", True),
        ("\\frac12", "0.5", True),
        ("-\\frac{3}{4}", "-0.75", True),
        ("-3", "-3.0", True),
        ("1e3", "1000", True),
        ("0.1", "1/10", True),
        ("18", "18.00", True),
        ("17", "18", False),
        ("0.333", "1/3", False),  # exact, not rounded
        ("1/0", "1", False),  # no ZeroDivisionError
        ("$18", "18 dollars", True),  # gold is normalised too
        ("5", "\\boxed{5}", True),
        ("seven", "7", False),  # no digit, no LaTeX: decided without the worker
    ],
)
def test_check_numeric(pred, gold, correct):
    assert check_answer(pred, gold) == (correct, None)


def test_to_fraction_exact_values():
    assert tmath.to_fraction("3.50") == Fraction(7, 2)
    assert tmath.to_fraction("-2.5e-1") == Fraction(-1, 4)
    assert tmath.to_fraction("\\frac{6}{4}") == Fraction(3, 2)
    assert tmath.to_fraction("x+1") is None


def test_no_answer_reason():
    assert check_answer(None, "5") == (False, "no_answer")
    assert score("I give up.", "5") == (None, False, "no_answer")


def test_numeric_scoring_never_starts_the_worker(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("numeric answers must not reach the symbolic checker")

    monkeypatch.setattr(verify, "symbolic_equal", boom)
    for pred, gold in [("3.5", "7/2"), ("1,000", "1000"), ("abc", "5"), ("1e99999999", "1"), (None, "3")]:
        check_answer(pred, gold)


# ---------------------------------------------------------------- hostile input


def test_huge_numbers_are_capped_not_built():
    start = time.perf_counter()
    assert tmath.to_fraction("1e99999999") is None
    assert tmath.to_fraction("9" * 100_000) is None
    assert check_answer("1e99999999", "1") == (False, None)
    big = "9" * 100_000
    assert score(f"The answer is {big}.", big) == (big, True, None)  # equal as strings
    assert score(f"The answer is {big}.", "5") == (big, False, None)
    assert time.perf_counter() - start < 1.0


def test_deep_nesting_is_linear():
    frac = "\\frac{" * 10_000 + "1" + "}{2}" * 10_000
    parens = "(" * 10_000 + "1" + ")" * 10_000
    start = time.perf_counter()
    assert score(f"The answer is \\boxed{{{frac}}}.", "1/2")[1] is False
    assert score(f"The answer is {parens}", "x+1")[1] is False
    assert score("\\boxed{" + "\\frac{" * 10_000 + "1", "1") == ("1", True, None)  # unbalanced: last number
    # Many boxes must not mean a rescan per box (quadratic).
    assert score("\\boxed{" * 30_000, "1") == (None, False, "no_answer")
    assert score("\\boxedx" * 30_000, "1") == (None, False, "no_answer")
    assert time.perf_counter() - start < 1.0


def test_200kb_completion_is_fast():
    text = ("We add 17 and 25 to get 42, then check the sum again. " * 4000)[:200_000] + "\nThe answer is 42."
    start = time.perf_counter()
    assert score(text, "42") == ("42", True, None)
    assert score(text.replace("The answer", "So"), "42")[1] is True  # last-number scan
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    "template",
    [
        "The answer is {code}",
        "The answer is $\\boxed{{{code}}}$",
        "#### {code}",
    ],
)
def test_python_in_answer_is_never_executed(tmp_path, template):
    marker = tmp_path / "MARKER"
    code = f"__import__('os').system('touch {marker}')"
    pred, correct, _ = score(template.format(code=code), "x^2+1")  # symbolic gold: reaches the worker
    assert correct is False
    pred, correct, _ = score(template.format(code=code), "5")
    assert correct is False
    assert not marker.exists()


# ---------------------------------------------------------------- symbolic (worker)


@pytest.mark.parametrize(
    "pred, gold, correct",
    [
        ("\\frac{\\sqrt{8}}{2}", "\\sqrt{2}", True),
        ("x^2+1", "1+x^2", True),
        ("x^2+1", "x^2-1", False),
        ("[1,2)", "[1,2)", True),
        ("(1,2]", "[1,2]", False),
        ("2\\pi", "\\pi \\cdot 2", True),
        ("\\sqrt{4}", "2", True),  # a number against LaTeX goes to the worker
    ],
)
def test_check_symbolic(pred, gold, correct):
    assert check_answer(pred, gold) == (correct, None)


def test_power_tower_returns_quickly():
    verify.worker().equal("1", "1")  # start-up is not part of the limit
    start = time.perf_counter()
    correct, reason = check_answer("9^9^9^9", "1")
    assert correct is False and reason in (None, "timeout")
    correct, reason = check_answer("9^{9^{9^{9}}}", "1", timeout=1.0)
    assert (correct, reason) == (False, "timeout")
    assert time.perf_counter() - start < 4.0
    # The killed worker is replaced on the next request.
    assert check_answer("x+1", "1+x") == (True, None)


def test_worker_restarts_after_being_killed():
    w = verify.worker()
    w.equal("1", "1")
    starts = w.starts
    w._proc.kill()
    w._proc.wait()
    assert w.equal("x", "x") == (True, None)
    assert w.starts == starts + 1


# ---------------------------------------------------------------- terminal lines


@pytest.mark.parametrize(
    "line, task, expected",
    [
        ("The answer is 42.", "math", True),
        ("So the final answer is \\frac{1}{2}", "math", True),
        ("#### 18", "math", True),
        ("Therefore \\boxed{5}", "math", True),
        ("The answer is", "math", False),  # nothing stated yet
        ("We need to find the answer first.", "math", False),
        ("Let 2 + 2 = 4.", "math", False),
        ("The answer is (C).", "mcq", True),
        ("Answer: B", "mcq", True),
        ("The answer is bank.", "mcq", True),
        ("Answer choices are listed above", "mcq", False),
    ],
)
def test_is_answer_line(line, task, expected):
    assert is_answer_line(line, task) is expected


# ---------------------------------------------------------------- mcq

CHOICES = [
    {"label": "A", "text": "bank"},
    {"label": "B", "text": "library"},
    {"label": "C", "text": "river bed"},
    {"label": "D", "text": "school"},
]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Money is kept safe there. The answer is (A).", "A"),
        ("The answer is C", "C"),
        ("answer: d", None),  # bare lowercase letter is not a label...
        ("answer: (d)", "D"),  # ...unless in parentheses
        ("The answer is (B). On reflection, the answer is (D).", "D"),
        ("The answer is (F).", None),  # not a label of this question
        ("Fish live there, so the answer is river bed.", "C"),
        ("Between (A) and (B), I pick (B)", "B"),
        ("You borrow books from a library.", "B"),  # one choice mentioned
        ("Either a bank or a library.", None),  # ambiguous mention
        ("The answer is a school.", "D"),
    ],
)
def test_extract_mcq(text, expected):
    assert extract_answer(text, "mcq", CHOICES) == expected


def test_check_mcq():
    assert check_answer("B", "B", "mcq", CHOICES) == (True, None)
    assert check_answer("B", "(b)", "mcq", CHOICES) == (True, None)
    assert check_answer("B", "library", "mcq", CHOICES) == (True, None)  # gold given as text
    assert check_answer("A", "B", "mcq", CHOICES) == (False, None)
    assert check_answer(None, "B", "mcq", CHOICES) == (False, "no_answer")
    assert score("The answer is (E).", "E", "mcq") == ("E", True, None)  # default labels A-E


def test_unknown_task_is_a_user_error():
    with pytest.raises(MctsPrefError, match="unknown task 'code'"):
        extract_answer("x", task="code")
    assert extract_answer("The answer is 3", task=None) == "3"  # missing task = math
