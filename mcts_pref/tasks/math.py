"""Math answers: find the final answer in a completion, normalise it, compare.

Extraction priority (the paper's prompt ends with "The answer is X"):

1. the last "The answer is X" / "The final answer is X" (case-insensitive);
2. the last ``#### X`` (GSM8K's gold format);
3. the last ``\\boxed{X}`` (balanced, nested braces; MATH's format);
4. the last LaTeX span: ``$X$``, ``$$X$$``, ``\\(X\\)``, ``\\[X\\]`` (where a
   MATH-style model leaves its answer without a box), unless a number
   follows it in plain text;
5. the last number anywhere in the text (a lenient fallback).

In 1 and 2 the answer is a box on that line if there is one, else the first
LaTeX span of the sentence (with spans joined to it by "and", "or" or a
comma, as in "$1$, $2$ and $3$"), else the sentence itself.

Equivalence: a numeric fast path with exact ``fractions.Fraction``
arithmetic ("3.50" == "3.5", "0.5" == "1/2" == "\\frac{1}{2}", a percent equal
to its number and to its number / 100), then math-verify's ``parse`` and
``verify`` in a worker process with a hard time limit for everything else
(``mcts_pref.tasks.verify``), gold and prediction parsed the same way.

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
# Words that may stand between "answer is" and the answer ("is therefore 3").
_CONNECTIVE = re.compile(r"(?:therefore|thus|hence|so|then|clearly|simply|just|now)\b[ \t,:]*", re.IGNORECASE)
_IS_ANSWER_LINE = re.compile(r"answer\s+is\b[ \t]*:?[ \t]*\S|####[ \t]*\S|\\boxed", re.IGNORECASE)

_NUMBER = re.compile(r"([+-])?(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?")
_SLASH = re.compile(r"([+-]?[\d.]+)\s*/\s*([+-]?[\d.]+)")
_FRAC = re.compile(r"(-)?\\frac\{([^{}]*)\}\{([^{}]*)\}")
_FRAC_SHORT = re.compile(r"(-)?\\frac(\d)(\d)")
_COMMA_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_NUMBER_THEN_WORDS = re.compile(r"(-?[\d.,/]+)\s+([A-Za-z]+)(?![A-Za-z])[A-Za-z \t'-]*")
# Words after a number that are part of the value, not a unit ("2 pi").
_MATH_WORDS = frozenset("pi sqrt i e x y z n k".split())
_TEXT_WRAP = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mbox|emph)\s*\{([^{}]*)\}")
_ASSIGNMENT = re.compile(r"[A-Za-z]\w{0,8}\s*=\s*(?=\S)")
# "\\" (a matrix row break) is matched first so that its second backslash is
# never read as the start of "\ " (a space); thin spaces inside a number
# ("10,\!000", "1\,000") go without a trace.
_LATEX_SPACING = re.compile(r"\\\\|\\[!,;:]|\\ |\\(?:left|right|displaystyle)(?![A-Za-z])")
# Delimiters of LaTeX math in running text; "\\" and "\$" are listed so that
# they are skipped as units, never read as "\[" or "$".
_MATH_DELIM = re.compile(r"\\\\|\\\$|\\[()\[\]]|\$\$?|\n")
_SPAN_JOIN = re.compile(r"\s*(?:,?\s*(?:and|or)|,)\s*")
_CLOSER = {"$": "$", "$$": "$$", "\\(": "\\)", "\\[": "\\]"}
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


def latex_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of the content of each complete LaTeX math span, in order.

    Spans are ``$...$``, ``$$...$$``, ``\\(...\\)`` and ``\\[...\\]``; ``\\$`` is
    a dollar sign, not a delimiter. Inline ``$`` and ``\\(`` spans stay on one
    line. A ``$`` opens only before a non-space and closes only after a
    non-space and not before a digit (pandoc's rule), so prices in prose
    ("$5 and then $2 more") are not math. One regex pass: linear time.
    """
    spans, opener, start = [], None, 0
    for m in _MATH_DELIM.finditer(text):
        tok, i, j = m.group(0), m.start(), m.end()
        if opener is None:
            if tok == "$$" or tok in ("\\(", "\\["):
                opener, start = tok, j
            elif tok == "$" and j < len(text) and not text[j].isspace():
                opener, start = tok, j
        elif tok == "\n":
            if opener in ("$", "\\("):
                opener = None
        elif opener == "$" and tok.startswith("$"):
            closes = i > start and not text[i - 1].isspace() and not (i + 1 < len(text) and text[i + 1].isdigit())
            if closes:
                spans.append((start, i))
                opener = None
                if tok == "$$" and j < len(text) and not text[j].isspace():
                    opener, start = "$", j  # "$a$$b$": the second "$" opens again
        elif tok == _CLOSER[opener]:
            spans.append((start, i))
            opener = None
    return [(a, b) for a, b in spans if text[a:b].strip()]


def _span_chain(text: str, spans: list[tuple[int, int]], k: int, step: int) -> str:
    """Span ``k`` with its neighbours joined by "and"/"or"/"," (``step`` -1: the
    ones before it, +1: after), as one comma-separated answer."""
    parts, i = [text[slice(*spans[k])].strip()], k
    while 0 <= i + step < len(spans):
        left, right = (spans[i + step], spans[i]) if step < 0 else (spans[i], spans[i + step])
        if right[0] - left[1] > 16:  # a joiner is short; also keeps the regex below cheap
            break
        # the gap is the closing delimiter, the joiner and the opening one
        gap = text[left[1] : right[0]].strip("$\\()[] \t")
        if not gap or not _SPAN_JOIN.fullmatch(gap):
            break
        i += step
        parts.append(text[slice(*spans[i])].strip())
    return ", ".join(reversed(parts) if step < 0 else parts)


_BECAUSE = re.compile(r"\s+(?:since|because|as)\s", re.IGNORECASE)


def _answer_span(rest: str) -> str:
    """The answer part of the text after "answer is": a box, the first LaTeX
    span of the sentence, or the sentence."""
    if "\\boxed" in rest or "\\fbox" in rest:
        boxed = last_boxed(rest)
        if boxed is not None:
            return boxed
    sentence = _SENTENCE.match(rest).group(1)
    spans = latex_spans(rest)
    # A span counts when it starts in the sentence and no number was stated
    # before it ("is $5$", "is therefore $x = 5$", not "is 12 since $3 \\cdot 4 = 12$").
    if spans and spans[0][0] <= len(sentence) + 2 and not any(c.isdigit() for c in rest[: spans[0][0]]):
        return _span_chain(rest, spans, 0, 1)
    m = _CONNECTIVE.match(sentence)
    sentence = sentence[m.end() :] if m and m.end() < len(sentence) else sentence
    # "is 10 since 3 * 4 = 12": the answer is what was stated, not the reason after it.
    return _BECAUSE.split(sentence, 1)[0] or sentence


def _is_percent(answer) -> bool:
    """Does the answer as written end in a percent sign ("50\\%", "12 percent.")?"""
    s = str(answer).rstrip(" \t\n.$").lower()
    return s.endswith("%") or s.endswith("percent")


def _spacing(m: re.Match) -> str:
    tok = m.group(0)
    return tok if tok == "\\\\" else "" if tok in ("\\!", "\\,", "\\;", "\\:") else " "


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


_OPERATOR = re.compile(r"[-+*/×÷^]|\\(?:times|cdot|div|frac)")
_REASON_WORD = re.compile(r"\b(?:since|because|as|so|but|which|that|and|then|is|are|was|were|from|when|if|or)\b", re.I)


def _number_after_equals(s: str) -> str:
    """A worked equation ending in a number gives that number ("15 * 8 = 120 pints" -> "120 pints").

    Only a plain ``=`` counts (not ``<=``, ``>=``, ``!=``), only when what stands
    before it is a calculation (an operator, no other answers, no connective
    such as "since" that would make it a stated answer plus its reason), and
    only when what follows the last one is a number, perhaps with words after it.
    """
    i = s.rfind("=")
    if i <= 0 or s[i - 1] in "<>!:" or s[i + 1 : i + 2] == "=" or "," in s[:i] or ";" in s[:i]:
        return s  # a relation, or several answers ("x = 2, x = 3")
    left = s[:i]
    if not _OPERATOR.search(left) or _REASON_WORD.search(left):
        return s  # not a worked calculation: "10 since 3*4 = 12" states 10, not 12
    rest = s[i + 1 :].strip()
    number = _NUMBER_THEN_WORDS.fullmatch(rest)
    if _COMMA_NUMBER.fullmatch(rest) or _NUMBER.fullmatch(rest) or (number and number.group(2).lower() not in _MATH_WORDS):
        return rest
    return s


def normalize(answer: str | None) -> str | None:
    """Canonical text of an answer; ``None`` if nothing is left.

    Removes ``$``/``\\$``, ``%``/``\\%``, degrees, LaTeX spacing and ``\\left``/
    ``\\right`` (keeping ``\\\\`` row breaks), unwraps ``\\text{...}``/``\\textbf{...}``,
    maps ``\\dfrac``/``\\tfrac`` to ``\\frac``, drops unit words, a leading
    ``x =``, thousands commas (also ``10,\\!000`` and ``10{,}000``), a trailing
    period and extra whitespace. Idempotent.
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
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = _DEGREES.sub("", s)
    s = _LATEX_SPACING.sub(_spacing, s)
    s = _SPACES.sub(" ", s).strip().rstrip(".").strip()
    m = _ASSIGNMENT.match(s)
    if m and "=" not in s[m.end() :]:
        s = s[m.end() :]
    s = _number_after_equals(s)
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


_CALCULATOR = re.compile(r"<<[^<>]*>>")


def extract_span(text: str) -> str | None:
    """The final answer of a math completion as written (not normalised), or ``None``.

    The first candidate in priority order whose normalised form is not empty;
    ``check`` takes this text, so a "%" on the answer still counts there.
    GSM8K calculator annotations (``<<8*3=24>>``) are not part of any answer.
    """
    text = _CALCULATOR.sub("", text)
    for pattern in (_ANSWER_IS, _HASHES):
        rest = _rest_after_last(pattern, text)
        if rest is not None:
            span = _answer_span(rest)
            if normalize(span) is not None:
                return span
    span = last_boxed(text)
    if span is not None and normalize(span) is not None:
        return span
    last = None
    for last in _LAST_NUMBER.finditer(text):
        pass
    # The last LaTeX span, unless a number stands after it in plain text
    # ("so $x^2 = 25$ and x is 5"): math-verify also takes whichever is last.
    spans = latex_spans(text)
    if spans and (last is None or last.start() < spans[-1][1]):
        span = _span_chain(text, spans, len(spans) - 1, -1)
        if normalize(span) is not None:
            return span
    return last.group(0) if last is not None else None


def extract(text: str) -> str | None:
    """Normalised final answer of a math completion, or ``None``."""
    return normalize(extract_span(text))


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
        # "50%" is both 50 and 1/2, as in math-verify ("50\\%" == "0.5", "50\\%" == "50").
        if _is_percent(gold) and fp == fg / 100:
            return True, None
        if _is_percent(pred) and fp / 100 == fg:
            return True, None
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
