"""`merge`: join the outputs of `--shard i/N` runs into one file, deterministically."""

from __future__ import annotations

import json
import re
from typing import Annotated, Optional

import typer

from mcts_pref import options as O
from mcts_pref.console import console, stage
from mcts_pref.errors import MctsPrefError
from mcts_pref.records import RecordWriter, iter_records, read_problems


def record_key(rec: dict) -> tuple:
    """What identifies a record across shards: its problem (and sample index) or, for pairs, its content."""
    if "problem_id" in rec and "chosen" not in rec:
        return (str(rec["problem_id"]), int(rec.get("sample_index", 0)))
    if "id" in rec and "question" in rec:
        return (str(rec["id"]), 0)
    return (str(rec.get("problem_id", "")), json.dumps(rec, sort_keys=True))


def _natural(s: str) -> list:
    """'p-2' sorts before 'p-10'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _comparable(rec: dict) -> str:
    # Timing stats differ between two runs of the same work; they are not content.
    return json.dumps({k: v for k, v in rec.items() if k != "stats"}, sort_keys=True)


def merge_records(files: list[str]) -> list[dict]:
    """All records of ``files``, duplicates kept once, sorted by problem id then sample index.

    Raises MctsPrefError naming the ids when one key has two different contents.
    """
    seen: dict[tuple, tuple[dict, str]] = {}
    conflicts: list[str] = []
    for path in files:
        for line, rec in iter_records(path):
            key = record_key(rec)
            if key in seen:
                if _comparable(seen[key][0]) != _comparable(rec):
                    conflicts.append(f"{key[0]} ({seen[key][1]} vs {path}:{line})")
                continue
            seen[key] = (rec, f"{path}:{line}")
    if conflicts:
        shown = "; ".join(conflicts[:5]) + (f"; and {len(conflicts) - 5} more" if len(conflicts) > 5 else "")
        raise MctsPrefError(f"conflicting records for the same id: {shown}")
    keys = sorted(seen, key=lambda k: (_natural(k[0]), k[1] if isinstance(k[1], int) else 0, str(k[1])))
    return [seen[k][0] for k in keys]


@stage
def command(
    files: Annotated[list[str], typer.Argument(help="Shard outputs to merge (any record kind).")],
    expect: Annotated[Optional[str], typer.Option("--expect", help="Problem JSONL: report ids no shard covered.")] = None,
    out: O.OutReplaced = None,
) -> None:
    """Merge shard outputs into one JSONL in a deterministic order.

    Identical duplicates are kept once; the same id with different content is
    a conflict (exit 2, naming the ids).
    """
    merged = merge_records(files)
    with RecordWriter(out) as w:
        w.write_many(merged)
    console.print(f"merged {len(merged)} records from {len(files)} files")
    if expect:
        have = {str(r.get("problem_id", r.get("id"))) for r in merged}
        missing = [str(p["id"]) for p in read_problems(expect, unique=False) if str(p["id"]) not in have]
        if missing:
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            console.print(f"[yellow]missing {len(missing)} problem ids[/yellow]: {', '.join(missing[:10])}{more}")
        else:
            console.print("[green]every expected problem is covered[/green]")
