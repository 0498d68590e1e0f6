"""MATH-style answers: LaTeX spans, styling, relations, intervals, sets,
matrices, percents and shorthand, scored as Math-Verify scores them.

Expected values are worked out by hand. Symbolic cases share the one
math-verify worker process; the GSM8K checks never start it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from mcts_pref.tasks import check_answer, extract_answer, score
from mcts_pref.tasks import math as tmath
from mcts_pref.tasks import verify

FIXTURES = Path(__file__).parent / "fixtures"
GSM8K_TRAIN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k" / "train.jsonl"

PMATRIX = r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}"

# ---------------------------------------------------------------- extraction order and LaTeX spans


@pytest.mark.parametrize(
    "text, expected",
    [
        ("$\\frac{1}{3}$", "\\frac{1}{3}"),  # the case: was "3"
        ("We get $2x = 6$, so\n$$x = 3$$", "3"),  # display dollars; "x =" dropped
        ("Hence \\( \\dfrac{\\pi}{4} \\).", "\\frac{\\pi}{4}"),
        ("Multiplying out,\n\\[ 2\\sqrt{3} \\]", "2\\sqrt{3}"),
        ("The answer is $\\frac12$ hours.", "\\frac12"),  # first span of the answer sentence
        ("The answer is \\(\\frac{1}{6}\\).", "\\frac{1}{6}"),
        ("Final Answer: The final answer is $(1,2]$. I hope it is correct.", "(1,2]"),
        ("The answer is therefore 3.", "3"),
        ("We have $\\boxed{4}$ and later $5$.", "4"),  # a box beats a later span
        ("It costs $5 and then $2 more, so 7 in all.", "7"),  # prices are not math
        ("She pays \\$6 per hour, so \\$18 in all.", "18"),
        ("We need $x^2 = 25$ with $x > 0$, so x is 5.", "5"),  # a number after the last span wins
        ("The roots are $x = 2$ and $x = 3$.", "x = 2, x = 3"),  # spans joined by "and"
        ("So $" + PMATRIX + "$.", PMATRIX),  # the "\\\\" row break survives
        ("Thus $\\left( 3, \\frac{\\pi}{2} \\right)$.", "( 3, \\frac{\\pi}{2} )"),
    ],
)
def test_extract_latex(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text, spans",
    [
        ("a $x$ b $$y$$ c \\(z\\) d \\[w\\]", ["x", "y", "z", "w"]),
        ("price \\$5 and \\$6", []),  # escaped dollars
        ("$ 5 $ and $6 $", []),  # pandoc: no space inside the delimiters
        ("$1$2$", ["1$2"]),  # a "$" before a digit does not close
        ("$x\ny$", []),  # an inline span stays on its line
        ("\\[x\ny\\]", ["x\ny"]),  # a display span need not
        ("a \\\\[2pt] b", []),  # a LaTeX line break, not "\\["
        ("$\\$5$", ["\\$5"]),
    ],
)
def test_latex_spans(text, spans):
    assert [text[a:b] for a, b in tmath.latex_spans(text)] == spans


def test_normalize_keeps_latex_structure_and_is_idempotent():
    assert tmath.normalize(PMATRIX) == PMATRIX
    assert tmath.normalize("10,\\!000") == "10000"
    assert tmath.normalize("x \\geq 5") == "x \\geq 5"
    for raw in [PMATRIX, "10,\\!000", "10{,}000", "\\left[ -2, 7 \\right)", "\\textbf{(B)}", "k = \\tfrac13"]:
        once = tmath.normalize(raw)
        assert tmath.normalize(once) == once


# ---------------------------------------------------------------- forms that must compare equal (or not)


@pytest.mark.parametrize(
    "pred, gold, correct",
    [
        # styling removed
        ("\\left( 1, 2 \\right]", "(1, 2]", True),
        ("\\dfrac{1}{3}", "1/3", True),
        ("\\tfrac{3}{4}", "0.75", True),
        ("12 \\text{ cm}", "12", True),
        ("\\textbf{(B)}", "\\text{(B)}", True),
        ("\\text{(C)}", "\\text{(B)}", False),
        ("90^{\\circ}", "90", True),
        # "x = ..." takes the right side
        ("x = 5", "5", True),
        ("k = \\frac{1}{3}", "\\frac{1}{3}", True),
        ("\\cos \\theta = -\\frac{1}{2}", "-\\frac{1}{2}", True),
        ("y = 3x + 2", "y = 2x + 3", False),
        # relations compared as relations
        ("x \\geq 5", "x >= 5", True),
        ("5 \\leq x", "x \\ge 5", True),
        ("x > 5", "x \\geq 5", False),
        ("x \\neq 3", "x \\ne 3", True),
        ("-2 > x", "x < -2", True),
        # intervals and sets
        ("\\left[ -2, 7 \\right]", "[-2, 7]", True),
        ("(-2, 7)", "[-2, 7]", False),
        ("(1, \\infty) \\cup (-\\infty, -1)", "(-\\infty,-1)\\cup(1,\\infty)", True),
        ("\\{3, 2, 1\\}", "\\{1, 2, 3\\}", True),
        ("1, -2", "-2, 1", True),
        ("2, -1", "-2, 1", False),
        # matrices
        ("\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\end{bmatrix}", PMATRIX, True),
        ("\\begin{pmatrix} 1 & 3 \\\\ 2 & 4 \\end{pmatrix}", PMATRIX, False),  # was True: rows lost
        ("\\begin{pmatrix}-1\\\\2\\end{pmatrix}", "\\begin{pmatrix} -1 \\\\ 2 \\end{pmatrix}", True),
        # percent: its number, and its number / 100
        ("50\\%", "50", True),
        ("50\\%", "0.5", True),
        ("0.5", "50\\%", True),
        ("25\\%", "50", False),
        ("12.5 percent", "12.5", True),
        # \frac13 shorthand
        ("\\frac13", "\\frac{1}{3}", True),
        ("\\frac1{3}", "1/3", True),
        ("\\dfrac34", "0.75", True),
        ("-\\frac34", "-0.75", True),
        ("\\frac13", "\\frac{1}{4}", False),
        # thousands separators in LaTeX
        ("10,\\!000", "10000", True),
        ("10{,}000", "10000", True),
        ("1\\,000", "1000", True),
    ],
)
def test_math_forms(pred, gold, correct):
    assert check_answer(pred, gold) == (correct, None)


@pytest.mark.parametrize(
    "completion, gold, correct",
    [
        ("$\\frac{1}{3}$", "1/3", True),
        ("So $k = \\frac{1}{3}$.", "1/3", True),
        ("The solution is \\( x \\geq 5 \\).", "x >= 5", True),
        ("$$\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}$$", PMATRIX, True),
        ("Therefore $x \\in [2, 5)$.", "[2, 5)", True),
        ("Of $200$ students, $50$ chose red: $\\boxed{25\\%}$.", "0.25", True),  # "%" kept for the check
        ("The answer is 50%.", "0.5", True),
        ("The answer is $2 + 2 = 4$.", "4", True),
        ("So the answer is $\\sqrt{3}$.", "-\\sqrt{3}", False),
    ],
)
def test_score_math_completions(completion, gold, correct):
    assert score(completion, gold)[1:] == (correct, None)


def test_percent_pred_is_still_normalised():
    assert score("The answer is 50%.", "0.5") == ("50", True, None)


# ---------------------------------------------------------------- GSM8K stays exact and in-process


def _no_worker(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("GSM8K answers must not reach the symbolic checker")

    monkeypatch.setattr(verify, "symbolic_equal", boom)


@pytest.mark.parametrize(
    "pred, gold",
    [("1,000,001", "1000001"), ("1,000,000.5", "1000000.5"), ("$1,500", "1500"), ("0.1", "1/10")],
)
def test_thousands_commas_stay_exact(monkeypatch, pred, gold):
    _no_worker(monkeypatch)
    assert check_answer(pred, gold) == (True, None)
    assert tmath.to_fraction(tmath.normalize(pred)) == tmath.to_fraction(tmath.normalize(gold))


def _gsm8k_golds_score_right(path: Path, monkeypatch) -> int:
    """Each gold scores right against its own solution, as `prepare` writes it
    (in-process, exact) and as the raw text (a few odd lines may reach the worker)."""
    calls = []
    real = verify.symbolic_equal
    monkeypatch.setattr(verify, "symbolic_equal", lambda *a, **k: calls.append(a) or real(*a, **k))
    n = 0
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line:
            continue
        solution = json.loads(line)["answer"]
        gold = solution.rsplit("####", 1)[1].strip()
        steps = re.sub(r"<<[^>]*>>", "", solution.rsplit("\n", 1)[0])
        assert score(f"{steps}\nThe answer is {gold}.", gold)[1:] == (True, None), solution
        assert not calls, solution
        assert score(solution, gold)[1:] == (True, None), solution
        calls.clear()
        n += 1
    return n


def test_gsm8k_fixture_golds_score_right(monkeypatch):
    assert _gsm8k_golds_score_right(FIXTURES / "gsm8k.jsonl", monkeypatch) == 2


@pytest.mark.skipif(not GSM8K_TRAIN.exists(), reason="../shared/data/gsm8k is not here")
def test_gsm8k_train_golds_score_right(monkeypatch):
    start = time.perf_counter()
    assert _gsm8k_golds_score_right(GSM8K_TRAIN, monkeypatch) == 7473
    assert time.perf_counter() - start < 30


# ---------------------------------------------------------------- hostile input


def test_latex_bomb_times_out_under_two_seconds():
    verify.worker().equal("1", "1")  # start-up is not part of the limit
    start = time.perf_counter()
    assert score("So the value is $9^{9^{9^{9}}}$.", "1", timeout=1.0) == ("9^{9^{9^{9}}}", False, "timeout")
    assert time.perf_counter() - start < 2.0
    assert score("Thus $x + 1$.", "1+x") == ("x + 1", True, None)  # the next check works


def test_span_scanning_is_linear():
    start = time.perf_counter()
    for text in ["$" * 100_000, "\\(" * 50_000, "$a" * 50_000, "$1$" + " " * 100_000 + "and $2$",
                 "$1$, " * 20_000, "The answer is " + "$x$ and " * 20_000]:
        extract_answer(text)
    assert time.perf_counter() - start < 1.0


def test_the_worker_never_hands_text_to_eval(tmp_path):
    """Only math-verify's LaTeX config is used: its expression config runs SymPy's parse_expr (eval)."""
    from math_verify import ExprExtractionConfig

    assert not any(isinstance(c, ExprExtractionConfig) for c in verify._configs())
    marker = tmp_path / "ran"
    text = f"The answer is $__import__('os').system('touch {marker}')$."
    assert score(text, "1")[1] is False
    assert not marker.exists()


def test_code_in_a_latex_span_is_never_executed(tmp_path):
    marker = tmp_path / "MARKER"
    code = f"__import__('os').system('touch {marker}')"
    for completion in (f"So ${code}$.", f"\\[ {code} \\]", f"The answer is {code} = 1/3"):
        assert score(completion, "x^2+1")[1] is False
        assert score(completion, "1/3")[1] in (True, False)
    assert not marker.exists()


@pytest.mark.parametrize("text,gold,right", [
    ("the final answer is 15 gallons * 8 pints / gallon = 120 pints", "120", True),
    ("The answer is 2 + 3 = 5.", "5", True),
    ("The answer is 2 + 3 = 6.", "5", False),
    ("The answer is <<8=8>>8.", "8", True),  # a GSM8K calculator annotation is not the answer
    ("The answer is $x \\geq 5$.", "x >= 5", True),  # a relation keeps its left side
])
def test_worked_equations_give_their_result(text, gold, right):
    assert score(text, gold)[1] is right


@pytest.mark.parametrize("text,gold,right", [
    ("The answer is 10 since 3*4 = 12.", "12", False),  # the stated answer is 10
    ("The answer is 10 since 3*4 = 12.", "10", True),
    ("The answer is 7 = 7.", "7", True),
])
def test_a_stated_answer_with_its_reason_is_not_the_reasons_result(text, gold, right):
    assert score(text, gold)[1] is right


def test_number_then_words_is_linear_on_hostile_input():
    text = "The answer is 1 " + "a" * 20000 + "!"
    t0 = time.perf_counter()
    extract_answer(text)
    assert time.perf_counter() - t0 < 0.5
