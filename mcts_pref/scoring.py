"""Scoring completions against gold answers: reading, joining an answer key, scoring, summaries.

The engine of `mcts-pref evaluate` (the command, with its tables, is
``evaluate.py``); benchmarks and other stages use it directly. A record needs
only ``completion`` and a gold ``answer`` (see ``evaluate.py`` for the record
contract). Answers are never run as code: ``tasks.score`` compares them.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from mcts_pref import check
from mcts_pref.errors import MctsPrefError, RecordError
from mcts_pref.records import UniqueIds, check_version, iter_records
from mcts_pref.stats import wilson_interval
from mcts_pref.steps import split_steps
from mcts_pref.tasks import resolve_task, score
from mcts_pref.tasks.math import to_fraction
from mcts_pref.tasks.mcq import normalize_choices, normalize_gold

# ---------------------------------------------------------------- validation


def _shown(path: str | Path) -> str:
    return "<stdin>" if str(path) == "-" else str(path)


def _name(rec: dict) -> str:
    pid = rec.get("problem_id")
    return "sample record" if pid is None else f"sample record (problem_id={pid!r})"


def _is_gold(answer) -> bool:
    return isinstance(answer, (str, int, float)) and not isinstance(answer, bool)


def scoring_inputs(rec: dict, where: str, line: int | None) -> tuple[str, str | int | float, str, list[dict] | None]:
    """What scoring needs from one record, checked: ``(completion, gold, task, choices)``.

    ``choices`` come back as ``[{"label", "text"}, ...]`` whatever their shape
    in the record. Raises RecordError naming ``where:line`` and the key.
    """
    if "completion" not in rec:
        raise RecordError(where, line, f"{_name(rec)} is missing required key 'completion' (the text to score)")
    if not isinstance(rec["completion"], str):
        raise RecordError(where, line, f"'completion' must be a string, got {type(rec['completion']).__name__}")
    if rec.get("answer") is None:
        raise RecordError(
            where, line,
            f"{_name(rec)} is missing required key 'answer' (the gold answer to score against; "
            "add it, or join it from problem records with --answer-key PROBLEMS.jsonl)",
        )
    if not _is_gold(rec["answer"]):
        raise RecordError(where, line, f"'answer' must be a string or number, got {type(rec['answer']).__name__}")
    try:
        choices = normalize_choices(rec.get("choices"))
    except ValueError as e:
        raise RecordError(where, line, f"bad 'choices': {e}") from None
    try:
        task = resolve_task(rec.get("task") or ("mcq" if choices else None))
    except MctsPrefError as e:
        raise RecordError(where, line, str(e)) from None
    return rec["completion"], rec["answer"], task, choices


def step_texts(rec: dict, where: str, line: int | None, task: str = "math") -> list[str]:
    """The record's ``steps``, or its completion split by the project's step rule when it has none."""
    steps = rec.get("steps")
    if steps is None:
        return split_steps(rec["completion"], task)
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise RecordError(where, line, "'steps' must be a list of strings (leave it out to split the completion into lines)")
    return steps


@dataclass
class AnswerKey:
    """Problem records by id: the gold answers for completions that lack them."""

    path: str
    problems: dict[str, dict]

    def find(self, rec: dict, where: str, line: int) -> dict:
        """The problem whose ``id`` is the record's ``problem_id`` (compared as text)."""
        if rec.get("problem_id") is None:
            raise RecordError(where, line, f"sample record has no 'problem_id' to look up in the answer key {self.path}")
        problem = self.problems.get(str(rec["problem_id"]))
        if problem is None:
            raise RecordError(where, line, f"problem_id {rec['problem_id']!r} is not in the answer key {self.path}")
        return problem


def read_answer_key(path: str | Path) -> AnswerKey:
    """Problem records (``id`` and ``answer`` needed; ``task``, ``choices`` used) from ``path``."""
    shown = _shown(path)
    problems: dict[str, dict] = {}
    ids = UniqueIds(path)
    for line, rec in iter_records(path):
        check_version(rec, shown, line)
        for key in ("id", "answer"):
            if rec.get(key) is None:
                raise RecordError(shown, line, f"answer-key record is missing required key '{key}'")
        if not _is_gold(rec["answer"]):
            raise RecordError(shown, line, f"'answer' must be a string or number, got {type(rec['answer']).__name__}")
        try:
            normalize_choices(rec.get("choices"))
        except ValueError as e:
            raise RecordError(shown, line, f"bad 'choices': {e}") from None
        ids.add(rec["id"], line)
        problems[str(rec["id"])] = rec
    return AnswerKey(shown, problems)


def join_answer_key(rec: dict, problem: dict) -> dict:
    """A copy of ``rec`` with the problem's gold ``answer``, and its ``task`` and
    ``choices`` where ``rec`` has none. The key is the gold: a record's own
    ``answer`` (often another generator's prediction) is replaced.

    When both have choices, a gold label is turned into its choice text: the
    record's labels may order the options differently (shuffled choices), and
    the text is what both agree on.
    """
    out = {**rec, "answer": problem["answer"]}
    key_choices = normalize_choices(problem.get("choices"))
    if key_choices and rec.get("choices"):
        label = normalize_gold(problem["answer"], key_choices)
        out["answer"] = next((c["text"] for c in key_choices if c["label"].upper() == label), problem["answer"])
    for key in ("task", "choices"):
        if not rec.get(key) and problem.get(key):
            out[key] = problem[key]
    return out


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def read_samples(path: str, answer_key: AnswerKey | None = None, steps: bool = False, warn=_warn) -> list[dict]:
    """Read, join and check every record of ``path`` (``-`` = stdin) before any scoring.

    A record without ``problem_id`` gets its line number as ``problem_id``, so
    that it counts as its own problem in pass@k and maj@k.
    """
    shown = _shown(path)
    out = []
    replaced = 0
    for line, rec in iter_records(path):
        check_version(rec, shown, line)
        if answer_key is not None:
            joined = join_answer_key(rec, answer_key.find(rec, shown, line))
            if rec.get("answer") is not None and str(rec["answer"]).strip() != str(joined["answer"]).strip():
                replaced += 1
            rec = joined
        task = scoring_inputs(rec, shown, line)[2]
        if steps:
            step_texts(rec, shown, line, task)
        if rec.get("problem_id") is None:
            rec = {"problem_id": line, **{k: v for k, v in rec.items() if k != "problem_id"}}
        out.append(rec)
    if replaced:
        warn(f"{replaced} record(s) of {shown} carry an 'answer' that differs from the answer key; "
             f"scored against the key's ({answer_key.path})")
    return out


# ---------------------------------------------------------------- scoring


def score_samples(
    records: list[dict], timeout: float = 1.0, steps: bool = False, answer_key: AnswerKey | None = None
) -> list[dict]:
    """Copies of ``records`` with ``pred``, ``correct`` and ``reason`` added
    (and ``step_checks`` with ``steps``).

    ``timeout`` bounds each symbolic check in seconds. A record that cannot
    be scored raises RecordError naming its position (1-based) and problem.
    A record without ``problem_id`` gets its position. The step checker sees
    the record merged over its answer-key problem, so a task-specific check
    finds the problem's ``question`` and ``source`` there.
    """
    scored = []
    for i, rec in enumerate(records, 1):
        completion, gold, task, choices = scoring_inputs(rec, "<records>", i)
        pred, correct, reason = score(completion, gold, task, choices, timeout)
        out = {**rec, "pred": pred, "correct": correct, "reason": reason}
        if out.get("problem_id") is None:
            out["problem_id"] = i
        if steps:
            problem = rec
            if answer_key is not None:
                problem = {**answer_key.problems.get(str(rec.get("problem_id")), {}), **rec}
            out["step_checks"] = list(check.check_steps(step_texts(rec, "<records>", i, task), problem))
        scored.append(out)
    return scored


# ---------------------------------------------------------------- summary


def _vote_key(pred: str):
    """Votes for "0.5", "1/2" and "\\frac{1}{2}" count together."""
    value = to_fraction(pred)
    return ("num", value) if value is not None else ("str", pred)


def majority_correct(samples: list[dict]) -> bool:
    """maj@k for one problem: is the most common prediction correct?

    Unparsed samples do not vote. Ties go to the prediction seen first, so
    the result does not depend on dict or set ordering.
    """
    votes: dict = {}
    for s in samples:
        if s.get("pred") is None:
            continue
        key = _vote_key(str(s["pred"]))
        count, first, correct = votes.get(key, (0, len(votes), bool(s.get("correct"))))
        votes[key] = (count + 1, first, correct)
    if not votes:
        return False
    _, _, correct = max(votes.values(), key=lambda v: (v[0], -v[1]))
    return correct


def step_check_rates(scored: list[dict]) -> tuple[int, float | None, float | None]:
    """``(n_checked, false_step, process_accuracy)`` over samples with ``step_checks``.

    false_step = (samples with at least one "bad" step) / n_checked;
    process_accuracy = (samples correct AND without a "bad" step) / n_checked.
    "unknown" steps count as not false. Both are ``None`` when nothing was checked.
    """
    checked = [s for s in scored if s.get("step_checks") is not None]
    if not checked:
        return 0, None, None
    false = [(check.BAD in s["step_checks"]) for s in checked]
    n = len(checked)
    return n, sum(false) / n, sum(bool(s.get("correct")) and not f for s, f in zip(checked, false)) / n


def policy_name(policy) -> str:
    """Display name of a record's policy (a string, or {model, adapter})."""
    if policy is None:
        return "(no policy)"  # completions from another generator
    if isinstance(policy, str):
        return policy
    if isinstance(policy, dict) and "model" in policy:
        adapter = policy.get("adapter")
        return f"{policy['model']} + {adapter}" if adapter else str(policy["model"])
    return json.dumps(policy, sort_keys=True)


def _stats(scored: list[dict]) -> dict:
    groups: dict[str, list[dict]] = defaultdict(list)
    for s in scored:
        groups[str(s.get("problem_id"))].append(s)
    n, correct = len(scored), sum(bool(s.get("correct")) for s in scored)
    ci = wilson_interval(correct, n)
    n_checked, false_step, process_accuracy = step_check_rates(scored)
    out = {
        "n_samples": n,
        "n_problems": len(groups),
        "correct": correct,
        "accuracy": correct / n if n else None,
        "ci95": list(ci) if ci else None,
        "no_answer": sum(s.get("reason") == "no_answer" for s in scored),
        "timeouts": sum(s.get("reason") == "timeout" for s in scored),
        "k": None,
        "pass_at_k": None,
        "maj_at_k": None,
        "n_step_checked": n_checked,
        "false_step": false_step,
        "process_accuracy": process_accuracy,
    }
    sizes = [len(g) for g in groups.values()]
    if sizes and max(sizes) > 1:
        out["k"] = max(sizes)
        if min(sizes) != max(sizes):
            out["k_min"] = min(sizes)  # uneven: each problem uses the samples it has
        out["pass_at_k"] = sum(any(s.get("correct") for s in g) for g in groups.values()) / len(groups)
        out["maj_at_k"] = sum(majority_correct(g) for g in groups.values()) / len(groups)
    return out


def summarize(scored: list[dict]) -> dict:
    """Summary of scored samples (see the module docstring for the fields).

    With several policies, ``policies`` maps each policy's name to its own
    summary and the top-level pass@k/maj@k group samples by (policy, problem).
    """
    by_policy: dict[str, list[dict]] = defaultdict(list)
    for s in scored:
        by_policy[policy_name(s.get("policy"))].append(s)
    if len(by_policy) <= 1:
        return _stats(scored)
    # Votes must not mix policies: key the overall groups by (policy, problem).
    keyed = [{**s, "problem_id": [name, s.get("problem_id")]} for name, ss in by_policy.items() for s in ss]
    out = _stats(keyed)
    out["n_problems"] = len({str(s.get("problem_id")) for s in scored})
    out["policies"] = {name: _stats(ss) for name, ss in sorted(by_policy.items())}
    return out
