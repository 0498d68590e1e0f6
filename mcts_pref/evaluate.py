"""`mcts-pref evaluate`: score completions against gold answers.

Input is JSONL from `mcts-pref sample` or from any other generator. A record
needs only ``completion`` (the text to score) and a gold ``answer``. With
``--answer-key PROBLEMS`` the gold answer comes from the problem record whose
``id`` equals the record's ``problem_id`` (and so do ``task`` and ``choices``
when the record has none). Everything else is optional:

- ``problem_id``: the record's line number when absent;
- ``task``: ``mcq`` when the record has ``choices``, else ``math``;
- ``choices``: a list of strings (labels A, B, C, ...), a list of
  ``{"label", "text"}``, or a ``{label: text}`` object
  (``tasks.mcq.normalize_choices``);
- ``policy``: summary rows per policy when the file mixes several;
- ``steps``: used by ``--steps``; else ``steps.split_steps`` cuts the completion.

Each sample gets ``pred`` (the extracted, normalised answer), ``correct`` and
``reason`` (``None`` when compared; else ``no_answer``, ``timeout`` or
``verifier_error``), and with ``--steps`` ``step_checks``: the step checker's
verdict per step (``ok``, ``bad`` or ``unknown``; ``mcts_pref.check``).

The summary reports accuracy over samples with a 95% Wilson interval and, when
a problem has several samples, pass@k (any sample correct) and maj@k (majority
vote over predictions), per policy when the file mixes policies. With step
checks it adds ``false_step`` (fraction of samples with at least one false
step) and ``process_accuracy`` (correct and no false step). A pure function of
the input files: no model, and answers are never run as code. The scoring
itself is ``scoring.py``; this module is the command and its tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table

from mcts_pref.console import console, stage
from mcts_pref.errors import MctsPrefError
from mcts_pref.records import RecordWriter
from mcts_pref.scoring import read_answer_key, read_samples, score_samples, summarize


def _warn(msg: str) -> None:
    console.print(f"warning: {msg}", markup=False, highlight=False)


def _pct(x: float | None, sign: str = "%") -> str:
    # "100%" rather than "100.0%": the table must fit an 80-column stderr.
    return "-" if x is None else f"{100 * x:.1f}".replace("100.0", "100") + sign


def render_summary(summary: dict, console) -> None:
    """Print the summary as rich tables: one row per policy (numbered, with
    a legend, since policy names are long), then "all". Step checks get a
    second table, so that each fits an 80-column stderr."""
    # Compact headers and box: stderr is often an 80-column pipe or CI log.
    policies = list(summary.get("policies", {}).items())
    rows = [(f"[{i}]", s) for i, (_, s) in enumerate(policies, 1)] + [("all", summary)]
    table = _table("policy", "n", "probs", "acc", "95% CI", "no ans", "t/o", "k", "pass@k", "maj@k")
    for label, s in rows:
        ci = s.get("ci95")
        table.add_row(
            label, str(s["n_samples"]), str(s["n_problems"]), _pct(s["accuracy"]),
            f"{_pct(ci[0], '')}-{_pct(ci[1], '')}" if ci else "-",
            str(s["no_answer"]), str(s["timeouts"]), str(s["k"] or "-"),
            _pct(s["pass_at_k"]), _pct(s["maj_at_k"]),
        )
    console.print(table)
    if summary.get("n_step_checked"):
        table = _table("policy", "checked", "acc", "false step", "process acc")
        for label, s in rows:
            table.add_row(label, str(s["n_step_checked"]), _pct(s["accuracy"]),
                          _pct(s["false_step"]), _pct(s["process_accuracy"]))
        console.print(table)
    for i, (name, _) in enumerate(policies, 1):
        console.print(f"[{i}] {name}", markup=False, highlight=False)


def _table(*columns: str) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in columns:
        table.add_column(col, justify="left" if col == "policy" else "right", no_wrap=True)
    return table


# ---------------------------------------------------------------- command


@stage
def command(
    samples: str = typer.Argument(..., help="Completions JSONL (from `mcts-pref sample` or any generator), or - for stdin."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Write scored records here instead of stdout (overwritten)."),
    report: Optional[str] = typer.Option(None, "--report", help="Also write the summary as JSON to this file."),
    answer_key: Optional[str] = typer.Option(
        None, "--answer-key", metavar="PROBLEMS",
        help="Problem JSONL (e.g. from `prepare`): gold answers by id = problem_id, for completions without them.",
    ),
    steps: bool = typer.Option(
        False, "--steps", help="Check each step's arithmetic: adds step_checks, false-step rate and process accuracy.",
    ),
    timeout: float = typer.Option(1.0, "--timeout", min=0.1, help="Seconds allowed per symbolic (math-verify) check."),
) -> None:
    """Score completions against gold answers and print accuracy, pass@k, maj@k.

    A record needs only `completion` and a gold `answer` (or --answer-key);
    `problem_id`, `task`, `choices`, `policy` and `steps` are optional. Adds
    pred, correct and reason to every record. Numeric answers compare
    exactly; LaTeX answers go through math-verify with a time limit; model
    text is never run as code.
    """
    if answer_key is not None and str(answer_key) == "-" and str(samples) == "-":
        raise MctsPrefError("SAMPLES and --answer-key cannot both be - (stdin)")
    key = read_answer_key(answer_key) if answer_key is not None else None
    records = read_samples(samples, answer_key=key, steps=steps, warn=_warn)
    scored = score_samples(records, timeout=timeout, steps=steps, answer_key=key)
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
