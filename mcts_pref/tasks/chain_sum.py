"""reasoning-gym ``gym:chain_sum``: the running-total rule, beside the task code.

A chain_sum question is a flat +/- chain of numbers ("7 - 4 + 3 ="). A
correct solution walks it left to right, so each claim's left side must be
the running total so far followed by the question's next term(s), with
their signs: "7 - 4 = 3" then "3 + 3 = 6" are ok; "7 + 3 = 10" is true
arithmetic on the wrong operands, so it is bad. ``mcts_pref.check``
registers ``chain_sum_check`` for the ``gym:chain_sum`` source; the claims
themselves are read by ``mcts_pref.claims``.

Limit: past MAX_STEPS previous steps the rule adds nothing, so a call stays
bounded however long the solution.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Optional, Sequence

from mcts_pref.claims import (BAD, CUT, MAX_STEP_CHARS, OK, UNKNOWN, Claim, Tok, _cuts, _number, _show,
                              _step_equalities, _Unknown, open_lines, tokenize)

MAX_STEPS = 64           # previous steps a task check reads (chain_sum); past it, it adds nothing

_FLAT_CHAIN = re.compile(r"[-+]?(?:n|\(-n\))(?:[-+][-+]?(?:n|\(-n\)))+")


def signed_operands(toks: Sequence[Tok]) -> Optional[list[Fraction]]:
    """``7 - 4 + -3`` -> [7, -4, -3]: a flat +/- chain of two or more plain numbers, else None."""
    shape = "".join(t.text if t.kind == "op" else {"num": "n", "lp": "(", "rp": ")"}.get(t.kind, "?") for t in toks)
    if not _FLAT_CHAIN.fullmatch(shape):
        return None
    out, sign = [], 1
    for t in toks:
        if t.kind == "op":
            sign = -sign if t.text == "-" else sign
        elif t.kind == "num":
            out.append(sign * _number(t.text).value)
            sign = 1
    return out


def _question_terms(problem: dict) -> Optional[list[Fraction]]:
    question = str(problem.get("question", "")).rpartition(":")[2].strip().rstrip("=")
    for text in (question, str((problem.get("meta") or {}).get("expression", ""))):
        try:
            terms = signed_operands(tokenize(text)) if len(text) <= MAX_STEP_CHARS else None
        except _Unknown:
            terms = None
        if terms:
            return terms
    return None


def _chain_sum_walk(step: str, head: str, cut: bool, terms: list[Fraction], totals: list[Fraction],
                    counts: set[int]) -> tuple[list[Claim], set[int]]:
    """One step's claims against the question's terms, and the counts of terms possibly used after it.

    ``counts`` holds every number of question terms the steps so far may have
    used. A step this check cannot follow (prose with numbers, "7 * 1 = 7", a
    mismatch) may have used any number of further terms, so it widens the set;
    a later step is bad only when no count in the set fits it. Zero terms may
    be skipped: "9 + 4" follows "9 + 0 + 4".
    """
    def skip_zeros(c: set[int]) -> set[int]:
        c = set(c)
        for k in sorted(c):
            while k < len(terms) and terms[k] == 0:
                k += 1
                c.add(k)
        return c

    def widen(c: set[int]) -> set[int]:
        return set(range(min(c, default=len(terms)), len(terms) + 1))

    counts, claims = skip_zeros(counts), []
    chain = [q for q in _step_equalities(step, head, cut) if q.first and not q.annotation and q.claim.reason != CUT]
    if not chain:
        return [], widen(counts) if re.search(r"\d", step) else counts
    for q in chain:
        try:
            ops = signed_operands(q.lhs) if q.lhs is not None else None
        except _Unknown:
            ops = None
        if ops is None:
            claims.append(Claim(q.claim.text, UNKNOWN, "not a +/- chain of numbers"))
            counts = widen(counts)
            continue
        fits = {k for k in counts if ops[0] == totals[k] and ops[1:] == terms[k:k + len(ops) - 1]}
        if fits:
            claims.append(Claim(q.claim.text, OK))
            counts = skip_zeros({k + len(ops) - 1 for k in fits})
        else:
            claims.append(Claim(q.claim.text, BAD, _chain_sum_reason(ops, terms, totals, counts)))
            counts = widen(counts)
    return claims, counts


def _signed(v: Fraction) -> str:
    return ("+" if v >= 0 else "") + _show(v)


def _chain_sum_reason(ops: list[Fraction], terms: list[Fraction], totals: list[Fraction], counts: set[int]) -> str:
    if len(counts) != 1:
        if all(ops[0] != totals[k] for k in counts):
            return f"left operand {_show(ops[0])} is not a running total of the question's terms"
        return "operands do not follow the question's terms"
    (k,) = counts
    if ops[0] != totals[k]:
        return f"left operand {_show(ops[0])} is not the running total {_show(totals[k])}"
    for j, op in enumerate(ops[1:]):
        if k + j >= len(terms):
            return "more operands than terms left"
        if op != terms[k + j]:
            return f"operand {_signed(op)} is not the next term {_signed(terms[k + j])}"
    raise AssertionError("unreachable")


def chain_sum_check(step: str, problem: dict, previous_steps: Sequence[str]) -> list[Claim]:
    """reasoning-gym chain_sum: each claim's left side is ``running total +/- next term(s)``.

    For "7 - 4 + 3": "7 - 4 = 3" then "3 + 3 = 6" are ok, and so is
    "7 - 4 + 3 = 6"; "7 + 3 = 10" is bad (true arithmetic, wrong operands).
    Terms compare by signed value, so "5 + 3" follows "5 - -3". A claim whose
    left side is not a flat +/- chain of numbers is unknown; a step without a
    claim adds none; a question that is not a +/- chain turns the check off.
    """
    terms = _question_terms(problem)
    if terms is None or len(previous_steps) > MAX_STEPS:
        return []
    totals = [Fraction(0)]
    for t in terms:
        totals.append(totals[-1] + t)
    steps, counts = [*previous_steps, step], {1}
    heads = open_lines(steps)
    for prev, head, cut in zip(previous_steps, heads, _cuts(steps)):
        counts = _chain_sum_walk(prev, head, cut, terms, totals, counts)[1]
    return _chain_sum_walk(step, heads[-1], False, terms, totals, counts)[0]
