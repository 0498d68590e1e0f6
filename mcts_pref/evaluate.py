"""`mcts-pref evaluate`: score sample records against their gold answers.

Each sample gets ``pred`` (the extracted, normalised answer), ``correct`` and
``reason`` (``None`` when compared; else ``no_answer``, ``timeout`` or
``verifier_error``). The summary reports accuracy over samples with a 95%
Wilson interval and, when a problem has several samples, pass@k (any sample
correct) and maj@k (majority vote over predictions), per policy when the
file mixes policies. A pure function of the input file: no model.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Optional

import typer

from mcts_pref.console import stage
from mcts_pref.records import MctsPrefError, RecordError, RecordWriter, iter_records

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


# ---------------------------------------------------------------- validation


def _check_sample(rec: dict, where: str, line: int | None) -> None:
    """Raise RecordError unless ``rec`` has what scoring needs."""
    from mcts_pref.tasks import TASKS

    if "answer" not in rec or rec["answer"] is None:
        raise RecordError(
            where, line,
            f"sample record (problem_id={rec.get('problem_id')!r}) is missing required key 'answer' "
            "(the gold answer to score against; copy it from the problem record)",
        )
    if not isinstance(rec["answer"], (str, int, float)) or isinstance(rec["answer"], bool):
        raise RecordError(where, line, f"'answer' must be a string or number, got {type(rec['answer']).__name__}")
    if not isinstance(rec.get("completion"), str):
        raise RecordError(where, line, f"'completion' must be a string, got {type(rec.get('completion')).__name__}")
    task = rec.get("task") or "math"
    if task not in TASKS:
        raise RecordError(where, line, f"unknown task {task!r} (expected one of: {', '.join(TASKS)})")
    choices = rec.get("choices")
    if choices is not None and not (
        isinstance(choices, list) and all(isinstance(c, dict) and "label" in c for c in choices)
    ):
        raise RecordError(where, line, "'choices' must be a list of {\"label\": ..., \"text\": ...} objects")


def read_samples(path: str) -> list[dict]:
    """Read and validate every sample record of ``path`` (``-`` = stdin) up front."""
    shown = "<stdin>" if str(path) == "-" else str(path)
    out = []
    for i, rec in iter_records(path, "sample"):
        _check_sample(rec, shown, i)
        out.append(rec)
    return out


# ---------------------------------------------------------------- scoring


def score_samples(records: list[dict], timeout: float = 1.0) -> list[dict]:
    """Copies of ``records`` with ``pred``, ``correct`` and ``reason`` added.

    ``timeout`` bounds each symbolic check in seconds. A record that cannot
    be scored raises RecordError naming its position (1-based) and problem.
    """
    from mcts_pref.tasks import score

    scored = []
    for i, rec in enumerate(records, 1):
        _check_sample(rec, "<records>", i)
        pred, correct, reason = score(rec["completion"], rec["answer"], rec.get("task") or "math", rec.get("choices"), timeout)
        scored.append({**rec, "pred": pred, "correct": correct, "reason": reason})
    return scored


# ---------------------------------------------------------------- summary


def wilson_interval(correct: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion; ``None`` when n == 0.

    centre = (p + z^2/2n) / (1 + z^2/n),
    half   = z * sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n).
    """
    if n == 0:
        return None
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _vote_key(pred: str):
    """Votes for "0.5", "1/2" and "\\frac{1}{2}" count together."""
    from mcts_pref.tasks.math import to_fraction

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


def policy_name(policy) -> str:
    """Display name of a record's policy (a string, or {model, adapter})."""
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


def _pct(x: float | None, sign: str = "%") -> str:
    # "100%" rather than "100.0%": the table must fit an 80-column stderr.
    return "-" if x is None else f"{100 * x:.1f}".replace("100.0", "100") + sign


def render_summary(summary: dict, console) -> None:
    """Print the summary as a rich table: one row per policy (numbered, with
    a legend, since policy names are long), then "all"."""
    from rich import box
    from rich.table import Table

    # Compact headers and box: stderr is often an 80-column pipe or CI log.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("policy", "n", "probs", "acc", "95% CI", "no ans", "t/o", "k", "pass@k", "maj@k"):
        table.add_column(col, justify="left" if col == "policy" else "right", no_wrap=True)
    policies = list(summary.get("policies", {}).items())
    rows = [(f"[{i}]", s) for i, (_, s) in enumerate(policies, 1)] + [("all", summary)]
    for label, s in rows:
        ci = s.get("ci95")
        table.add_row(
            label, str(s["n_samples"]), str(s["n_problems"]), _pct(s["accuracy"]),
            f"{_pct(ci[0], '')}-{_pct(ci[1], '')}" if ci else "-",
            str(s["no_answer"]), str(s["timeouts"]), str(s["k"] or "-"),
            _pct(s["pass_at_k"]), _pct(s["maj_at_k"]),
        )
    console.print(table)
    for i, (name, _) in enumerate(policies, 1):
        console.print(f"[{i}] {name}", markup=False, highlight=False)


# ---------------------------------------------------------------- command


@stage
def command(
    samples: str = typer.Argument(..., help="Sample JSONL (from `mcts-pref sample`), or - for stdin."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Write scored records here instead of stdout (overwritten)."),
    report: Optional[str] = typer.Option(None, "--report", help="Also write the summary as JSON to this file."),
    timeout: float = typer.Option(1.0, "--timeout", min=0.1, help="Seconds allowed per symbolic (math-verify) check."),
) -> None:
    """Score samples against their gold answers and print accuracy, pass@k, maj@k.

    Adds pred, correct and reason to every record. Numeric answers compare
    exactly; LaTeX answers go through math-verify with a time limit.
    """
    from mcts_pref.console import console

    records = read_samples(samples)
    scored = score_samples(records, timeout=timeout)
    try:
        with RecordWriter(out) as writer:
            writer.write_many(scored)
    except OSError as e:
        raise MctsPrefError(f"{out}: cannot write records ({e.strerror})") from None
    summary = summarize(scored)
    render_summary(summary, console)
    if report:
        try:
            Path(report).parent.mkdir(parents=True, exist_ok=True)
            Path(report).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        except OSError as e:
            raise MctsPrefError(f"{report}: cannot write the report ({e.strerror})") from None
