"""Per-task answer handling: extraction, equivalence, terminal-line detection.

Pure functions, no model. Task families (the ``task`` field of a problem):

- ``math`` (GSM8K, MATH, reasoning-gym arithmetic): see ``tasks.math``;
- ``mcq`` (ARC, CommonsenseQA): see ``tasks.mcq``.

A task's step rules live beside it too: ``tasks.chain_sum`` (reasoning-gym
chain_sum's running total), which ``mcts_pref.check`` registers; this
``__init__`` imports neither it nor ``check``, so imports stay acyclic.

A missing task (``None`` or ``""``) means ``math``. Reasons returned with a
verdict: ``None`` (an answer was compared), ``"no_answer"`` (nothing
extractable), ``"timeout"`` (the symbolic checker ran out of time),
``"verifier_error"`` (the symbolic checker crashed on this input).
"""

from __future__ import annotations

from mcts_pref.errors import MctsPrefError
from mcts_pref.tasks import math as _math
from mcts_pref.tasks import mcq as _mcq

TASKS = ("math", "mcq")

__all__ = ["TASKS", "check_answer", "extract_answer", "is_answer_line", "resolve_task", "score"]


def resolve_task(task: str | None) -> str:
    """The task family name; ``None``/empty means ``math``. Unknown -> error."""
    if not task:
        return "math"
    if task not in TASKS:
        raise MctsPrefError(f"unknown task {task!r} (expected one of: {', '.join(TASKS)})")
    return task


def extract_answer(text: str, task: str = "math", choices: list | None = None) -> str | None:
    """The normalised final answer in ``text`` (a label for mcq), or ``None``."""
    if resolve_task(task) == "mcq":
        return _mcq.extract(text, choices)
    return _math.extract(text)


def check_answer(
    pred: str | None, gold, task: str = "math", choices: list | None = None, timeout: float = 1.0
) -> tuple[bool, str | None]:
    """``(correct, reason)`` for an extracted ``pred`` against ``gold``.

    ``timeout`` (seconds) bounds a symbolic math check; numeric answers are
    compared exactly in-process and never start the checker.
    """
    if resolve_task(task) == "mcq":
        return _mcq.check(pred, gold, choices)
    return _math.check(pred, gold, timeout)


def score(
    completion: str, gold, task: str = "math", choices: list | None = None, timeout: float = 1.0
) -> tuple[str | None, bool, str | None]:
    """Extract and check in one go: ``(pred, correct, reason)``.

    For math the answer is checked as written ("50%"), ``pred`` is its
    normalised form ("50").
    """
    if resolve_task(task) == "mcq":
        pred = _mcq.extract(completion, choices)
        return (pred, *_mcq.check(pred, gold, choices))
    span = _math.extract_span(completion)
    return (_math.normalize(span), *_math.check(span, gold, timeout))


def is_answer_line(line: str, task: str = "math") -> bool:
    """Does one generated line state the final answer? Marks terminal steps.

    math: "The answer is X", "The final answer is X", "#### X", "\\boxed{X}";
    mcq: "The answer is (C)", "Answer: C", or "The answer is <choice text>".
    """
    if resolve_task(task) == "mcq":
        return _mcq.is_answer_line(line)
    return _math.is_answer_line(line)
