"""Math answers: find the final answer in a completion, normalise it, compare.

Extraction priority (the paper's prompt ends with "The answer is X"):

1. the last "The answer is X" / "The final answer is X" (case-insensitive);
2. the last ``#### X`` (GSM8K's gold format);
3. the last ``\\boxed{X}`` (balanced, nested braces; MATH's format);
4. the last number anywhere in the text (a lenient fallback).

Equivalence: a numeric fast path with exact ``fractions.Fraction``
arithmetic ("3.50" == "3.5", "0.5" == "1/2" == "\\frac{1}{2}"), then
math-verify in a worker process with a hard time limit for everything else
(``mcts_pref.tasks.verify``).

Every regex here is linear-time on hostile input (no nested quantifiers),
numbers are size-capped before any int is built, and model text is never
evaluated as Python.
"""

from __future__ import annotations

import re
from fractions import Fraction

from mcts_pref.tasks import verify

# Numbers beyond these caps are compared as strings: building them could take
# minutes or gigabytes ("1e99999999", a 100k-digit integer).
MAX_DIGITS = 300
MAX_EXPONENT = 300
# Answers longer or deeper than this never reach the symbolic checker: real
# answers are short, and the LaTeX parser is super-linear in nesting depth.
MAX_SYMBOLIC_CHARS = 400
MAX_SYMBOLIC_DEPTH = 12

# Matched without the rest of the line, so that two statements on one line
# are both found and the last one wins.
_ANSWER_IS = re.compile(r"answer\s+is\b[ \t]*:?[ \t]*", re.IGNORECASE)
_HASHES = re.compile(r"####[ \t]*")
_BOX = re.compile(r"\\(?:boxed|fbox)")
_TOKEN = re.compile(r"\S+")
_LAST_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
_SENTENCE = re.compile(r"(.*?)(?:\.\s|\.$|$)")
_IS_ANSWER_LINE = re.compile(r"answer\s+is\b[ \t]*:?[ \t]*\S|####[ \t]*\S|\\boxed", re.IGNORECASE)

_NUMBER = re.compile(r"([+-])?(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?")
_SLASH = re.compile(r"([+-]?[\d.]+)\s*/\s*([+-]?[\d.]+)")
_FRAC = re.compile(r"(-)?\\frac\{([^{}]*)\}\{([^{}]*)\}")
_FRAC_SHORT = re.compile(r"(-)?\\frac(\d)(\d)")
_COMMA_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_NUMBER_THEN_WORDS = re.compile(r"(-?[\d.,/]+)\s+([A-Za-z]+)[A-Za-z \t'-]*")
# Words after a number that are part of the value, not a unit ("2 pi").
_MATH_WORDS = frozenset("pi sqrt i e x y z n k".split())
_TEXT_WRAP = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_ASSIGNMENT = re.compile(r"[A-Za-z]\w{0,8}\s*=\s*(?=\S)")
_LATEX_SPACING = re.compile(r"\\[!,;: ]|\\(?:left|right|displaystyle)(?![A-Za-z])")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_UNIT_POWER = re.compile(r"\^\{?\d\}?$")
_SPACES = re.compile(r"\s+")

# Trailing words dropped from an answer ("18 dollars", "5 cm^2", "30 minutes").
UNITS = frozenset(
    """dollar dollars cent cents usd euro euros pound pounds percent unit units
    mm cm m km meter meters metre metres kilometer kilometers centimeter centimeters
    inch inches in foot feet ft yard yards mile miles mph
    g kg gram grams kilogram kilograms lb lbs ounce ounces oz ton tons
    ml l liter liters litre litres gallon gallons
    second seconds sec secs minute minutes min mins hour hours hr hrs day days
    week weeks month months year years degree degrees sq square""".split()
)


def _closing_braces(text: str) -> dict[int, int]:
    """Position of each ``{`` -> its matching ``}`` (unclosed ones absent)."""
    stack, match = [], {}
    for i, c in enumerate(text):
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            match[stack.pop()] = i
    return match


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}``, braces balanced.

    ``\\boxed 5`` (no braces) gives ``"5"``; an unclosed box is skipped for
    an earlier one. Linear time: one pass matches all braces, so 10k-deep
    nesting or 30k unclosed boxes cost the same as one.
    """
    starts = [m.end() for m in _BOX.finditer(text)]
    closing = None
    for start in reversed(starts):
        i = start
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            if closing is None:
                closing = _closing_braces(text)
            if i in closing:
                return text[i + 1 : closing[i]]
            continue  # unbalanced: try an earlier box
        if i > start:  # "\\boxed 5"; never "\\boxedx", and no scan that could go quadratic
            token = _TOKEN.match(text, i)
            if token:
                return token.group(0).rstrip("$.")
    return None


def _answer_span(rest: str) -> str:
    """The answer part of the text after "answer is": a box, or one sentence."""
    if "\\boxed" in rest or "\\fbox" in rest:
        boxed = last_boxed(rest)
        if boxed is not None:
            return boxed
    return _SENTENCE.match(rest).group(1)


def _strip_units(s: str) -> str:
    """Drop trailing unit words ("5 square cm^2" -> "5"), keeping a non-empty rest."""
    while True:
        parts = s.rsplit(None, 1)
        if len(parts) != 2:
            return s
        word = _UNIT_POWER.sub("", parts[1]).lower().rstrip(".")
        if word not in UNITS:
            return s
        s = parts[0].rstrip()


def normalize(answer: str | None) -> str | None:
    """Canonical text of an answer; ``None`` if nothing is left.

    Removes ``$``/``\\$``, ``%``/``\\%``, degrees, LaTeX spacing and ``\\left``/
    ``\\right``, unwraps ``\\text{...}``, maps ``\\dfrac``/``\\tfrac`` to
    ``\\frac``, drops unit words, a leading ``x =``, thousands commas, a
    trailing period and extra whitespace. Idempotent.
    """
    if answer is None:
        return None
    s = str(answer).strip()
    if "\\boxed" in s or "\\fbox" in s:
        boxed = last_boxed(s)
        if boxed is not None:
            s = boxed
    s = _TEXT_WRAP.sub(r" \1 ", s)
    # "**" is markdown bold around an answer far more often than a power.
    s = s.replace("**", "").replace("\u2212", "-")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = _DEGREES.sub("", s)
    s = _LATEX_SPACING.sub(" ", s)
    s = _SPACES.sub(" ", s).strip().rstrip(".").strip()
    m = _ASSIGNMENT.match(s)
    if m and "=" not in s[m.end() :]:
        s = s[m.end() :]
    s = _strip_units(s)
    m = _NUMBER_THEN_WORDS.fullmatch(s)
    if m and m.group(2).lower() not in _MATH_WORDS:
        s = m.group(1)  # "5 apples", "12 more than before": the quantity is the answer
    if s.startswith("{") and s.endswith("}") and s.count("{") == 1:
        s = s[1:-1].strip()
    if _COMMA_NUMBER.fullmatch(s):
        s = s.replace(",", "")
    s = s.rstrip(".").strip()
    return s or None


def _rest_after_last(pattern: re.Pattern, text: str) -> str | None:
    """The rest of the line after the last match of ``pattern``."""
    last = None
    for last in pattern.finditer(text):
        pass
    if last is None:
        return None
    end = text.find("\n", last.end())
    return text[last.end() : end if end >= 0 else len(text)]


def extract(text: str) -> str | None:
    """Normalised final answer of a math completion, or ``None``."""
    for pattern in (_ANSWER_IS, _HASHES):
        rest = _rest_after_last(pattern, text)
        if rest is not None:
            pred = normalize(_answer_span(rest))
            if pred is not None:
                return pred
    boxed = last_boxed(text)
    if boxed is not None:
        pred = normalize(boxed)
        if pred is not None:
            return pred
    last = None
    for last in _LAST_NUMBER.finditer(text):
        pass
    return normalize(last.group(0)) if last is not None else None


def is_answer_line(line: str) -> bool:
    """Does this generated line state the final answer? (cheap: one regex)"""
    return _IS_ANSWER_LINE.search(line) is not None


def _plain_number(s: str) -> Fraction | None:
    m = _NUMBER.fullmatch(s)
    if m is None:
        return None
    sign, whole, frac, exp = m.groups()
    whole, frac = whole or "", frac or ""
    if not (whole or frac) or len(whole) + len(frac) > MAX_DIGITS:
        return None
    if exp and len(exp) > 5:  # check the length before int() builds anything
        return None
    e = int(exp) if exp else 0
    if abs(e) > MAX_EXPONENT:
        return None
    value = Fraction(int(whole + frac or "0"), 10 ** len(frac)) * Fraction(10) ** e
    return -value if sign == "-" else value


def to_fraction(s: str | None) -> Fraction | None:
    """Exact value of a plain numeric answer, else ``None``.

    Accepts integers, decimals, scientific notation, ``a/b``, ``\\frac{a}{b}``
    and ``\\frac12`` with numeric parts. Size-capped (``MAX_DIGITS``,
    ``MAX_EXPONENT``): anything bigger is ``None`` and compared as a string.
    """
    if not s or len(s) > 2 * MAX_DIGITS + 20:
        return None
    s = s.replace(" ", "")
    value = _plain_number(s)
    if value is not None:
        return value
    m = _FRAC.fullmatch(s) or _FRAC_SHORT.fullmatch(s)
    if m is None:
        m = _SLASH.fullmatch(s)
        if m is None:
            return None
        num, den = _plain_number(m.group(1)), _plain_number(m.group(2))
        negative = False
    else:
        num, den = _plain_number(m.group(2)), _plain_number(m.group(3))
        negative = m.group(1) == "-"
    if num is None or den is None or den == 0:
        return None
    return -num / den if negative else num / den


def looks_numeric(s: str) -> bool:
    """Plain number syntax, whether or not it is within the size caps."""
    return _NUMBER.fullmatch(s) is not None and any(c.isdigit() for c in s)


def _mathy(s: str) -> bool:
    return any(c.isdigit() or c == "\\" for c in s)


def _depth(s: str) -> int:
    depth = deepest = 0
    for c in s:
        if c in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in ")]}":
            depth -= 1
    return deepest


def symbolic_candidate(s: str) -> bool:
    """Small and shallow enough to hand to the symbolic checker."""
    return len(s) <= MAX_SYMBOLIC_CHARS and _depth(s) <= MAX_SYMBOLIC_DEPTH


def check(pred: str | None, gold, timeout: float = 1.0) -> tuple[bool, str | None]:
    """Is ``pred`` equal to ``gold``? Returns ``(correct, reason)``.

    reason: ``None`` when compared, ``"no_answer"`` when there is no
    prediction, ``"timeout"`` when the symbolic checker ran out of time,
    ``"verifier_error"`` when it crashed on this input.
    """
    p, g = normalize(pred), normalize(gold)
    if p is None:
        return False, "no_answer"
    if g is None:
        return False, None
    if p == g or p.replace(" ", "") == g.replace(" ", ""):
        return True, None
    fp, fg = to_fraction(p), to_fraction(g)
    if fp is not None and fg is not None:
        return fp == fg, None
    # Skip the worker (string comparison only) for over-cap numbers, answers
    # too big to parse safely, and a number against text with no digit and no
    # LaTeX ("seven", "x"), which math-verify would not equate either.
    if (fp is None and looks_numeric(p)) or (fg is None and looks_numeric(g)):
        return False, None
    if not symbolic_candidate(p) or not symbolic_candidate(g):
        return False, None
    if (fg is not None and not _mathy(p)) or (fp is not None and not _mathy(g)):
        return False, None
    return verify.symbolic_equal(g, p, timeout)
