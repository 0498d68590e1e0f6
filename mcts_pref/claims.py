"""Claim reading: every arithmetic claim in one solution step -> ok / bad / unknown.

Over 450 lines on purpose: it is one parser (tokenizer, grammar, claim finder), read as a whole.

Pure and deterministic: no model, no torch. Model text is never run (no
eval/exec/sympify): a tokenizer and a recursive-descent parser read it. The
step-level API (``check_step``, ``check_steps``, task checks) is
``mcts_pref.check``; this module reads claims.

Claims. Each ``=`` is one claim between the expression just before it and
the one just after it, so ``a = b = c`` is two claims. GSM8K calculator
annotations ``<<48/2=24>>`` are claims of their own and are blanked out of the
prose around them. A side is the run of numbers, operators, parentheses and
``%`` next to the ``=``, unmatched outer parentheses trimmed. A name on one
side (``x = 3 * 4 = 12``, ``Total = 12``) is a definition, not a claim; the
numeric equalities after it are checked. A claim is ``unknown`` when words
are tied into it (``x + 3 = 5``, ``2x + 3 = x + 5``, ``half of 10 = 5``,
``Day 3 = 4``, ``4 rows * 4 = 16``), when a number is glued to other marks
(``11:00-8:00``, ``√(144)``), when it has a leading zero (``0900``, a time),
or when spacing groups against precedence (``25 / 1/3``). A step without
``=`` (a lone number, prose) has no claims. A claim ends at a newline;
markdown bold (``**Step 1:**``) and a list bullet opening a line (``- 7 - 4 =
3``) are not arithmetic.

Lines across steps (``step_equalities``, ``open_lines``; ``check.check_step``
and ``check.check_steps`` read steps this way). Steps carry their newlines,
as ``mcts_pref.steps`` cuts them; a step without one stopped mid-line (the
step token cap), so the next step is read on the whole line and owns the
claims it completes, and claims reaching the end of a ``cut`` step are
unknown there. Steps that carry no newline at all (lines split off a text)
are each their own line. ``find_claims`` reads one step alone.

Grammar of one side (``^`` binds tighter than unary minus: -2^2 = -4)::

    expr    := term (('+' | '-') term)*         also − and – for minus
    term    := unary (('*' | '/' | '//') unary)*  also × · ÷ \\times \\div, and x between numbers
    unary   := ('+' | '-') unary | power
    power   := postfix ('^' unary)?             right-associative; ** is ^
    postfix := primary '%'*
    primary := NUMBER | '(' expr ')'
    NUMBER  := 1200 | 1,200 | 3.25 | .5         ``$`` is skipped; "7." is 7 and a period

Values are exact ``fractions.Fraction``. ``%`` is read both as /100 and as a
unit label: ok if either reading holds, bad only if both fail.

Tolerance rule. Equal exact values are ok. Otherwise, when one side is a
single number written with d >= 1 decimals, the claim is ok if that number is
the other side's exact value rounded to d decimals (|exact - written| <=
0.5 * 10^-d, a tie either way) or truncated toward zero: ``10/3 = 3.33``,
``10/3 = 3.3``, ``2/3 = 0.67`` and ``2/3 = 0.66`` are ok; ``10/3 = 3.34`` and
``10/3 = 3`` are bad. An approximate claim (``≈``, ``~=``) may also round to
a whole number (d = 0); when it does not match it is unknown, never bad.

Limits (constants below): a step over MAX_STEP_CHARS is one unknown claim;
a side over MAX_EXPR_TOKENS tokens, a number over MAX_DIGITS digits, nesting
past MAX_DEPTH, a non-integer exponent or one over MAX_EXPONENT, a value over
MAX_BITS bits, and division by zero make that claim unknown. So every call
is bounded: a few milliseconds at most, on any input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import NamedTuple, Optional, Sequence

OK, BAD, UNKNOWN = "ok", "bad", "unknown"

MAX_STEP_CHARS = 2_000   # a step is one line (64 tokens by default; GSM8K lines <= 350 chars)
MAX_CLAIMS = 32          # equalities read per step
MAX_EXPR_TOKENS = 120    # tokens on one side of an equality
MAX_DEPTH = 24           # nested parentheses, stacked signs and exponents
MAX_DIGITS = 30          # digits in one written number
MAX_EXPONENT = 512       # |n| in a ^ n
MAX_BITS = 2048          # numerator and denominator size of any value

# Words that tie a neighbouring number into an expression written in words.
_LINK_LEFT = {"x", "times", "plus", "minus", "over", "twice", "half", "double", "triple", "thrice"}
_LINK_RIGHT = {"x", "of", "times", "plus", "minus", "divided", "multiplied", "squared", "cubed", "over", "percent"}
_OPENERS = {*"([{\"'“‘\n", "**"}   # the only marks a claim's first number may be glued to ("**" is bold)
NUM, NAME, VAGUE = "num", "name", "vague"   # what one side of an "=" is
CUT = "cut off at the end of the step"


@dataclass(frozen=True)
class Claim:
    text: str            # the claim as written, e.g. "3 + 4 = 7"
    verdict: str         # OK | BAD | UNKNOWN
    reason: Optional[str] = None   # why unknown/bad, short


# --- tokens ----------------------------------------------------------------------

class Tok(NamedTuple):
    kind: str   # num op lp rp pct eq word sep
    text: str   # ops normalised to + - * / // ^; eq is "=" or "~" (approximately)
    start: int
    end: int


_TOKEN = re.compile(r"""
   (?P<num>\d+(?:,\d{3}(?!\d))*(?:\.\d+)?|\.\d+)
  |(?P<sep><=|>=|==>|=>|->|!=)
  |(?P<eq>~=|≈|≅|==?)
  |(?P<op>\*\*|//|\\times|\\cdot|\\div|[-+*/^×÷·−–])
  |(?P<lp>\()|(?P<rp>\))|(?P<pct>%|\\%)
  |(?P<skip>[^\S\n]+|\\?\$)
  |(?P<word>[^\W\d_]+(?:-[^\W\d_]+)*)
  |(?P<other>.)""", re.X | re.S)
_OPS = {"**": "^", "\\times": "*", "\\cdot": "*", "×": "*", "·": "*", "\\div": "/", "÷": "/", "−": "-", "–": "-"}
_EXPR = {"num", "op", "lp", "rp", "pct"}
_ANNOTATION = re.compile(r"<<([^<>]*)>>")


def tokenize(text: str) -> list[Tok]:
    toks = []
    for m in _TOKEN.finditer(text):
        kind, s = m.lastgroup, m.group()
        if kind != "skip":
            s = _OPS.get(s, s) if kind == "op" else ("=" if s[0] == "=" else "~") if kind == "eq" else s
            toks.append(Tok("sep" if kind == "other" else kind, s, m.start(), m.end()))
    for i, t in enumerate(toks):
        # "0.2 x 50": an x between two operands multiplies; "**Step 1:**" is markdown, not a power.
        operands = 0 < i < len(toks) - 1 and toks[i - 1].kind in ("num", "rp", "pct") \
            and toks[i + 1].kind in ("num", "lp", "op")
        if t.text in ("x", "X") and operands and toks[i + 1].kind != "op":
            toks[i] = t._replace(kind="op", text="*")
        elif t.kind == "op" and text[t.start:t.end] == "**" and not operands:
            toks[i] = t._replace(kind="sep", text="**")
    return toks


def _glued(a: Tok, b: Tok) -> bool:
    return a.end == b.start


# --- evaluation ------------------------------------------------------------------

class _Unknown(Exception):
    pass


class Val(NamedTuple):
    value: Fraction
    decimals: Optional[int]   # decimals as written when the side is one number, else None


def _cap(v: Fraction) -> Fraction:
    if v.numerator.bit_length() > MAX_BITS or v.denominator.bit_length() > MAX_BITS:
        raise _Unknown("number too large")
    return v


def _number(text: str) -> Val:
    whole, _, frac = text.replace(",", "").partition(".")
    if len(whole) + len(frac) > MAX_DIGITS:
        raise _Unknown("number too long")
    if len(whole) > 1 and whole[0] == "0":
        raise _Unknown("leading zero (a time or a code?)")
    return Val(Fraction(int(whole or "0") * 10 ** len(frac) + int(frac or "0"), 10 ** len(frac)), len(frac))


def _power(base: Fraction, exp: Fraction) -> Fraction:
    if exp.denominator != 1:
        raise _Unknown("non-integer exponent")
    n = exp.numerator
    if abs(n) > MAX_EXPONENT or max(base.numerator.bit_length(), base.denominator.bit_length()) * abs(n) > MAX_BITS:
        raise _Unknown("exponent too large")
    if base == 0 and n < 0:
        raise _Unknown("division by zero")
    return base ** n


class _Parser:
    """Recursive descent over one side's tokens; each method is one grammar rule."""

    def __init__(self, toks: Sequence[Tok], percent_divides: bool):
        if not toks:
            raise _Unknown("empty side")
        if len(toks) > MAX_EXPR_TOKENS:
            raise _Unknown("expression too long")
        self.toks, self.i, self.depth, self.pct = toks, 0, 0, percent_divides

    def parse(self) -> Val:
        v = self.expr()
        if self.i != len(self.toks):
            raise _Unknown("cannot parse")
        return v

    def _take(self, kind: str, ops: tuple = ()) -> Optional[str]:
        t = self.toks[self.i] if self.i < len(self.toks) else None
        if t is None or t.kind != kind or ops and t.text not in ops:
            return None
        self.i += 1
        return t.text

    def _nest(self, rule) -> Val:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Unknown("nested too deeply")
        v = rule()
        self.depth -= 1
        return v

    def _spaced(self, op: str, after_spaced: bool) -> bool:
        # "25 / 1/3": a tight op after a spaced - or / groups by spacing, against precedence.
        i = self.i - 1
        spaced = not (i + 1 < len(self.toks) and _glued(self.toks[i - 1], self.toks[i])
                      and _glued(self.toks[i], self.toks[i + 1]))
        if after_spaced and not spaced:
            raise _Unknown("spacing suggests another grouping")
        return spaced and op in ("-", "/", "//")

    def expr(self) -> Val:
        v, spaced = self.term(), False
        while op := self._take("op", ("+", "-")):
            spaced = self._spaced(op, spaced)
            w = self.term()
            v = Val(_cap(v.value + w.value if op == "+" else v.value - w.value), None)
        return v

    def term(self) -> Val:
        v, spaced = self.unary(), False
        while op := self._take("op", ("*", "/", "//")):
            spaced = self._spaced(op, spaced)
            w = self.unary()
            if op != "*" and w.value == 0:
                raise _Unknown("division by zero")
            x = v.value * w.value if op == "*" else v.value / w.value if op == "/" else Fraction(v.value // w.value)
            v = Val(_cap(x), None)
        return v

    def unary(self) -> Val:
        if op := self._take("op", ("+", "-")):
            v = self._nest(self.unary)
            return Val(-v.value if op == "-" else v.value, v.decimals)
        base = self.postfix()
        if self._take("op", ("^",)):
            return Val(_cap(_power(base.value, self._nest(self.unary).value)), None)
        return base

    def postfix(self) -> Val:
        v = self.primary()
        while self._take("pct"):
            if self.pct:
                v = Val(v.value / 100, None if v.decimals is None else v.decimals + 2)
        return v

    def primary(self) -> Val:
        if num := self._take("num"):
            return _number(num)
        if self._take("lp"):
            v = self._nest(self.expr)
            if self._take("rp"):
                return v
        raise _Unknown("cannot parse")


def rounds_to(exact: Fraction, written: Fraction, decimals: int) -> bool:
    """True when ``written`` is ``exact`` rounded (a tie either way) or truncated to ``decimals`` places."""
    scale = 10 ** decimals
    return abs(exact - written) * scale * 2 <= 1 or Fraction(int(exact * scale), scale) == written


def _show(v: Fraction) -> str:
    if v.denominator == 1 and abs(v.numerator) < 10 ** 15:
        return str(v.numerator)
    try:
        return f"{float(v):.6g}"
    except OverflowError:
        return f"~2^{v.numerator.bit_length() - v.denominator.bit_length()}"


def _compare(a: Val, b: Val, approx: bool) -> tuple[str, Optional[str]]:
    if a.value == b.value:
        return OK, None
    for exact, written in ((a, b), (b, a)):
        if written.decimals is not None and (written.decimals >= 1 or approx) \
                and rounds_to(exact.value, written.value, written.decimals):
            return OK, None
    if approx:
        return UNKNOWN, "approximation not within the written precision"
    return BAD, f"lhs {_show(a.value)} != rhs {_show(b.value)}"


def judge(lhs: Sequence[Tok], rhs: Sequence[Tok], approx: bool = False) -> tuple[str, Optional[str]]:
    """Verdict and reason for ``lhs = rhs`` (``≈`` when approx): ok if any % reading holds, bad if all fail."""
    results = []
    for percent_divides in (True, False) if any(t.kind == "pct" for t in (*lhs, *rhs)) else (True,):
        try:
            left, right = _Parser(lhs, percent_divides).parse(), _Parser(rhs, percent_divides).parse()
            results.append(_compare(left, right, approx))
        except _Unknown as e:
            results.append((UNKNOWN, str(e)))
    return min(results, key=lambda r: (OK, UNKNOWN, BAD).index(r[0]))


# --- finding claims ----------------------------------------------------------------

@dataclass(frozen=True)
class Equality:
    """One ``=`` and its sides; ``lhs``/``rhs`` are None when that side is not plain numbers."""
    claim: Claim
    lhs: Optional[tuple]
    rhs: Optional[tuple]
    first: bool        # not the continuation of an "a = b = c" chain
    annotation: bool   # read from a GSM8K <<...>> annotation
    start: int         # where the claim starts and ends in the text it was read from
    end: int


def _balanced(toks: list[Tok], i: int, stop: int, step: int) -> tuple[int, bool]:
    """Walk from ``i`` toward ``stop`` (exclusive) and return the far end of the longest span without
    an unmatched parenthesis, and whether an unmatched one cut the run short ("100+(100*2 = ...")."""
    opens, closes = ("rp", "lp") if step < 0 else ("lp", "rp")
    depth, best = 0, i - step
    for j in range(i, stop, step):
        depth += (toks[j].kind == opens) - (toks[j].kind == closes)
        if depth < 0:
            return best, j != stop - step
        if depth == 0:
            best = j
    return best, False


def _left_kind(toks: list[Tok], s: int, e: int) -> str:
    p = toks[s - 1] if s > 0 else None
    if s == e:   # a word right before "=": a name, or algebra if an operator is tied to it ("2 * x = 8")
        return VAGUE if p is not None and p.kind == "word" and s > 1 and toks[s - 2].kind == "op" else NAME
    first = toks[s]
    if p is not None and _glued(p, first) and (p.kind == "word" or p.kind == "sep" and p.text not in _OPENERS):
        return VAGUE   # "8:00 - 6:00", "√(144)", "13,15,17&19", "x3"
    if p is not None and p.kind not in ("eq", "lp") and all(t.kind in ("num", "pct") for t in toks[s:e]):
        return VAGUE   # a lone number after words: "half of 10 = 5", "Day 3 = 4", "$7,980 : $420 = 19"
    if first.kind == "op":
        if first.text not in "+-":
            return VAGUE
        if p is None or p.kind in ("sep", "lp"):
            return NUM
        # "so -3 + 5" is a negative number; "x - 3" and "(a) + 1" are algebra.
        negative = p.kind == "word" and first.text == "-" and toks[s + 1].kind == "num" \
            and _glued(first, toks[s + 1]) and not _glued(p, first)
        return NUM if negative else VAGUE
    mixed = p is not None and p.text == "and" and s > 1 and toks[s - 2].kind == "num" \
        and e - s >= 3 and toks[s + 1].text == "/"   # "1 and 1/4"
    return VAGUE if mixed or p is not None and p.kind == "word" and p.text.lower() in _LINK_LEFT else NUM


def _right_kind(toks: list[Tok], s: int, f: int) -> str:
    n, after = (toks[f] if f < len(toks) else None), (toks[f + 1] if f + 1 < len(toks) else None)
    if s == f:
        return VAGUE if n is not None and n.kind == "word" and after is not None and after.kind in ("op", "lp") else NAME
    last = toks[f - 1]
    if last.kind == "op":
        return VAGUE
    if n is None:
        return NUM
    if n.kind == "sep" and n.text != "\n" and _glued(last, n) and after is not None and after.kind == "num" \
            and _glued(n, after):
        return VAGUE   # "= 8:00"
    if n.kind == "word" and (n.text.lower() in _LINK_RIGHT or (after is not None and after.kind in ("op", "lp"))
                             or len(n.text) == 1 and _glued(last, n)
                             or n.text == "and" and f + 2 < len(toks) and after.kind == "num" and toks[f + 2].text == "/"):
        return VAGUE   # "= 2x + 3", "= 3x", "= 1/2 of 40", "= 1 and 1/3"
    return NUM


def _widen(toks: list[Tok], i: int, step: int) -> int:
    # For display: grow a side that has words in it outward until two words in a row.
    while 0 <= i + step < len(toks) and toks[i + step].kind in _EXPR | {"word"} \
            and not (toks[i + step].kind == "word" and toks[i].kind == "word"):
        i += step
    return i


def _equalities(text: str, annotation: bool = False) -> list[Equality]:
    toks, out = tokenize(text), []
    for e, tok in enumerate(toks):
        if tok.kind != "eq" or len(out) >= MAX_CLAIMS:
            continue
        s0, f0 = e, e + 1
        while s0 > 0 and toks[s0 - 1].kind in _EXPR and e - s0 <= MAX_EXPR_TOKENS:
            s0 -= 1
        while f0 < len(toks) and toks[f0].kind in _EXPR and f0 - e <= MAX_EXPR_TOKENS + 1:
            f0 += 1
        too_long = s0 > 0 and toks[s0 - 1].kind in _EXPR or f0 < len(toks) and toks[f0].kind in _EXPR
        (s, left_cut), (f, right_cut) = _balanced(toks, e - 1, s0 - 1, -1), _balanced(toks, e + 1, f0, 1)
        f += 1
        if s < e - 1 and toks[s].kind == "op" and toks[s].text in "-+*" and not _glued(toks[s], toks[s + 1]) \
                and (s == 0 or toks[s - 1].text == "\n"):
            s += 1   # a list bullet at the start of a line ("- 7 - 4 = 3"), not a sign
        lk = VAGUE if left_cut else _left_kind(toks, s, e)
        rk = VAGUE if right_cut else _right_kind(toks, e + 1, f)
        if NAME in (lk, rk) and VAGUE not in (lk, rk) and not too_long:
            continue   # a definition ("x = 12") or no numbers at all
        if too_long:
            verdict, reason = UNKNOWN, "expression too long"
        elif lk == rk == NUM:
            verdict, reason = judge(toks[s:e], toks[e + 1:f], approx=tok.text == "~")
        else:
            verdict, reason = UNKNOWN, "words or unknowns in the equation"
        start = toks[_widen(toks, s, -1) if lk == VAGUE else s].start if s < e or lk == VAGUE else tok.start
        end = toks[_widen(toks, f - 1, 1) if rk == VAGUE else f - 1].end if f > e + 1 or rk == VAGUE else tok.end
        out.append(Equality(Claim(" ".join(text[start:end].split()), verdict, reason),
                            tuple(toks[s:e]) if lk == NUM else None, tuple(toks[e + 1:f]) if rk == NUM else None,
                            first=not (s0 > 0 and toks[s0 - 1].kind == "eq"), annotation=annotation,
                            start=start, end=end))
    return out


@lru_cache(maxsize=2048)
def equalities(step: str) -> tuple[Equality, ...]:
    """Every equality in ``step``, annotations and prose, in reading order."""
    if len(step) > MAX_STEP_CHARS:
        return (Equality(Claim(step[:40] + "...", UNKNOWN, "step too long"), None, None, True, False, 0, len(step)),)
    found = [Equality(Claim(f"<<{q.claim.text}>>", q.claim.verdict, q.claim.reason), q.lhs, q.rhs, q.first, True,
                      m.start(), m.end()) for m in _ANNOTATION.finditer(step) for q in _equalities(m.group(1), True)]
    # Blank the annotations with spaces so offsets still point into the step as written.
    found += _equalities(_ANNOTATION.sub(lambda m: " " * len(m.group()), step))
    return tuple(sorted(found, key=lambda q: q.start)[:MAX_CLAIMS])


def find_claims(step: str) -> list[Claim]:
    """Every arithmetic claim in one step, each with its general (task-free) verdict."""
    return [q.claim for q in equalities(step)]


def open_lines(steps: Sequence[str]) -> list[str]:
    """For each step, the unfinished line it continues: "" unless the step before stopped mid-line.

    Steps carry their newlines, as ``mcts_pref.steps`` cuts them, so a step
    without one was cut by the step token cap and the next step goes on with
    its line. While no step so far has a newline (lines split off a text),
    each step is its own line.
    """
    heads, head, seen = [], "", False
    for s in steps:
        seen = seen or "\n" in s
        heads.append(head if seen else "")
        head = (head + s).rpartition("\n")[2][-MAX_STEP_CHARS - 1:]
    return heads


def _step_equalities(step: str, head: str, cut: bool) -> list[Equality]:
    line_end = len(head) + len(step.rstrip())
    out = []
    for q in equalities(head + step):
        if q.end > len(head):   # an equality wholly on earlier steps' text belongs to them
            if cut and q.end >= line_end:
                q = Equality(Claim(q.claim.text, UNKNOWN, CUT), None, None, q.first, q.annotation, q.start, q.end)
            out.append(q)
    return out


def step_equalities(step: str, previous_steps: Sequence[str] = (), cut: bool = False) -> list[Equality]:
    """The equalities that ``step`` completes, read on its whole line (see ``open_lines``).

    With ``cut`` (the step itself stopped mid-line), one that reaches the
    step's end may go on in the next step: it is unknown here, judged there.
    """
    head = ""
    if "\n" in step or any("\n" in s for s in previous_steps):   # open_lines' last head, read backwards
        tail: list[str] = []
        for prev in reversed(previous_steps):
            tail.append(prev.rpartition("\n")[2])
            if "\n" in prev or sum(map(len, tail)) > MAX_STEP_CHARS:
                break
        head = "".join(reversed(tail))[-MAX_STEP_CHARS - 1:]
    return _step_equalities(step, head, cut)


def _cuts(steps: Sequence[str]) -> list[bool]:
    # Which steps stopped mid-line: those without a newline that the next step continues (open_lines).
    heads = open_lines(steps)
    return [i + 1 < len(steps) and not s.endswith("\n") and heads[i + 1] != "" for i, s in enumerate(steps)]
