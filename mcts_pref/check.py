"""Step checker: the verdict of one solution step -> ok / bad / unknown.

Pure and deterministic: no model, no torch. ``mcts_pref.claims`` reads the
arithmetic claims of a step (tokenizer, grammar, tolerance rule, limits;
model text is never run); this module is the step-level API over it:
``check_step`` (the claims of a step, read on its whole line, plus its
task's checks), ``aggregate`` and ``step_verdict`` (one verdict per step),
``verdict_score``, ``check_steps`` and ``has_false_step`` (a whole
solution). The names callers used to import from here (``OK``, ``Claim``,
``find_claims``, ``equalities``, ...) are re-exported from ``claims``.

Task checks. ``register_task_check(key, fn)`` adds a check that
``check_step`` runs for problems whose ``source`` or ``task`` is ``key``
(the source's first, then the task's; both when both are registered).
``gym:chain_sum`` is registered here, at import, so every caller of
``check_step`` gets it: the rule itself is ``mcts_pref.tasks.chain_sum``.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from mcts_pref.claims import (BAD, CUT, MAX_BITS, MAX_CLAIMS, MAX_DEPTH, MAX_DIGITS, MAX_EXPONENT, MAX_EXPR_TOKENS,
                              MAX_STEP_CHARS, OK, UNKNOWN, Claim, Equality, Tok, Val, _cuts, equalities, find_claims,
                              judge, open_lines, rounds_to, step_equalities, tokenize)
from mcts_pref.tasks.chain_sum import MAX_STEPS, chain_sum_check, signed_operands

__all__ = [
    # re-exported from mcts_pref.claims and mcts_pref.tasks.chain_sum, where they live
    "BAD", "CUT", "MAX_BITS", "MAX_CLAIMS", "MAX_DEPTH", "MAX_DIGITS", "MAX_EXPONENT", "MAX_EXPR_TOKENS",
    "MAX_STEP_CHARS", "MAX_STEPS", "OK", "UNKNOWN", "Claim", "Equality", "Tok", "Val", "chain_sum_check",
    "equalities", "find_claims", "judge", "open_lines", "rounds_to", "signed_operands", "step_equalities",
    "tokenize",
    # the step-check API
    "TaskCheck", "aggregate", "check_step", "check_steps", "has_false_step", "register_task_check",
    "step_verdict", "unregister_task_check", "verdict_score",
]

TaskCheck = Callable[[str, dict, Sequence[str]], "list[Claim]"]
_TASK_CHECKS: dict[str, TaskCheck] = {}


# --- task checks -------------------------------------------------------------------

def register_task_check(key: str, fn: TaskCheck) -> None:
    """Run ``fn(step, problem, previous_steps)`` for problems whose source or task is ``key``."""
    _TASK_CHECKS[key] = fn


def unregister_task_check(key: str) -> None:
    _TASK_CHECKS.pop(key, None)


register_task_check("gym:chain_sum", chain_sum_check)


# --- verdicts ----------------------------------------------------------------------

def check_step(step: str, problem: Optional[dict] = None, previous_steps: Sequence[str] = (), *,
               cut: bool = False) -> list[Claim]:
    """General claims plus the task's registered checks (looked up by problem['source'], then problem['task']).

    The general claims are those of ``step_equalities``: read on the whole
    line when the previous step stopped mid-line, and unknown at the end of a
    step that was itself ``cut`` mid-line (its search node's finish is "step_cap").
    """
    claims = [q.claim for q in step_equalities(step, previous_steps, cut)]
    for key in dict.fromkeys((problem or {}).get(k) for k in ("source", "task")):
        if key in _TASK_CHECKS:
            claims += _TASK_CHECKS[key](step, problem, previous_steps)
    return claims


def aggregate(claims: Sequence[Claim]) -> str:
    """BAD if any claim is bad, OK if at least one is ok and none bad, else UNKNOWN."""
    verdicts = {c.verdict for c in claims}
    return BAD if BAD in verdicts else OK if OK in verdicts else UNKNOWN


def step_verdict(step: str, problem: Optional[dict] = None, previous_steps: Sequence[str] = (), *,
                 cut: bool = False) -> str:
    """BAD if any claim is bad, OK if at least one is ok and none bad, else UNKNOWN."""
    return aggregate(check_step(step, problem, previous_steps, cut=cut))


def verdict_score(verdict: str) -> int:
    """OK -> +1, BAD -> -1, UNKNOWN -> 0."""
    return {OK: 1, BAD: -1, UNKNOWN: 0}[verdict]


def check_steps(steps: Sequence[str], problem: Optional[dict] = None) -> list[str]:
    """step_verdict of every step of a solution, each given the steps before it.

    A step before the last without a newline was cut mid-line (see ``open_lines``).
    """
    return [step_verdict(s, problem, steps[:i], cut=cut) for i, (s, cut) in enumerate(zip(steps, _cuts(steps)))]


def has_false_step(steps: Sequence[str], problem: Optional[dict] = None) -> bool:
    """Does the checker find a false claim in any step of a solution (each read after the steps before it)?"""
    return BAD in check_steps(steps, problem)
