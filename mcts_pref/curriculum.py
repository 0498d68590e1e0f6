"""`curriculum`: keep the problems the policy sometimes solves.

The setter-solver idea: search where the policy succeeds some of the time.
A tree over a problem the policy always fails rarely commits to a correct
answer (and makes no pairs under --only-correct-trees); a problem it always
solves teaches little. So: sample k solutions per problem of a larger pool
(`sample -k K --temperature T` + `evaluate`), and keep the problems whose pass
rate, correct samples / samples, lies in the band ``LO <= rate <= HI``. Both
edges are included and compared exactly (1 of 10 correct is in a band
starting at 0.1).

Kept problems are written as the records of ``--problems``, in that file's
order, with ``pass_rate`` and ``pass_samples`` added. A problem of
``--problems`` with no scored sample is skipped and counted, since sampling a
shard of a larger file is the usual case; a scored sample whose problem is not
in ``--problems`` is an error.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from typing import Annotated, Optional

import typer

from mcts_pref.console import console, stage
from mcts_pref.errors import MctsPrefError, RecordError
from mcts_pref.records import RecordWriter, iter_records, read_problems


@dataclass(frozen=True)
class Config:
    """Knobs of `curriculum`.

    lo (Fraction, 1/10): lowest pass rate kept, inclusive, in [0, 1].
    hi (Fraction, 9/10): highest pass rate kept, inclusive, in [lo, 1].
    limit (int | None, None): keep at most this many in-band problems (the first in file order).
    """

    lo: Fraction = Fraction(1, 10)
    hi: Fraction = Fraction(9, 10)
    limit: Optional[int] = None

    def __post_init__(self) -> None:
        if not 0 <= self.lo <= self.hi <= 1:
            raise MctsPrefError(f"--band {_show(self.lo)},{_show(self.hi)}: need 0 <= LO <= HI <= 1")
        if self.limit is not None and self.limit < 0:
            raise MctsPrefError("--limit must be >= 0")

    def contains(self, rate: Fraction) -> bool:
        return self.lo <= rate <= self.hi


def parse_band(text: str) -> tuple[Fraction, Fraction]:
    """"LO,HI" as exact fractions ("0.1" is exactly 1/10, so edges compare exactly)."""
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        lo, hi = (Fraction(p.strip()) for p in parts)
    except (ValueError, ZeroDivisionError):
        raise MctsPrefError(f"--band must be two numbers LO,HI (e.g. 0.1,0.9), got {text!r}") from None
    return lo, hi


def _show(x: Fraction) -> str:
    return f"{float(x):g}"


def read_scored(paths: list[str], problem_ids: set[str], problems_path: str) -> dict[str, list[int]]:
    """``problem_id -> [correct, samples]`` over every scored sample of ``paths``."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for path in paths:
        shown = "<stdin>" if path == "-" else path
        for line, rec in iter_records(path, "scored"):
            pid = str(rec["problem_id"])
            if pid not in problem_ids:
                raise RecordError(shown, line, f"problem {pid!r} is not in {problems_path}")
            counts[pid][0] += rec["correct"]
            counts[pid][1] += 1
    return counts


def select(problems: list[dict], counts: dict[str, list[int]], cfg: Config) -> tuple[list[dict], int]:
    """In-band problems (records with ``pass_rate``, ``pass_samples``) and how many had no samples."""
    kept, unsampled = [], 0
    for p in problems:
        if str(p["id"]) not in counts:
            unsampled += 1
            continue
        correct, n = counts[str(p["id"])]
        if cfg.contains(Fraction(correct, n)) and (cfg.limit is None or len(kept) < cfg.limit):
            kept.append({**p, "pass_rate": correct / n, "pass_samples": n})
    return kept, unsampled


def histogram(counts: dict[str, list[int]], cfg: Config) -> list[tuple[str, int, int]]:
    """Rows ``(pass rate label, problems, of them in band)``.

    With the same k for every problem, one row per possible rate j/k (k <= 20);
    otherwise ten bins of width 0.1, the last one closed.
    """
    rates = [Fraction(c, n) for c, n in counts.values()]
    ks = {n for _, n in counts.values()}
    if len(ks) == 1 and next(iter(ks)) <= 20:
        k = next(iter(ks))
        return [(f"{j}/{k}", sum(r == Fraction(j, k) for r in rates),
                 sum(r == Fraction(j, k) and cfg.contains(r) for r in rates)) for j in range(k + 1)]
    rows = []
    for b in range(10):
        lo, hi = Fraction(b, 10), Fraction(b + 1, 10)
        inside = [r for r in rates if lo <= r < hi or (b == 9 and r == 1)]
        rows.append((f"{float(lo):.1f}-{float(hi):.1f}", len(inside), sum(cfg.contains(r) for r in inside)))
    return rows


def render_histogram(rows: list[tuple[str, int, int]], width: int = 30) -> None:
    from rich import box
    from rich.table import Table

    t = Table(title="pass rate per problem", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("pass rate", "problems", "kept", ""):
        t.add_column(col, justify="left" if col in ("pass rate", "") else "right", no_wrap=True)
    top = max((n for _, n, _ in rows), default=0) or 1
    for label, n, kept in rows:
        bar = round(width * n / top)
        bar_kept = round(width * kept / top)
        t.add_row(label, str(n), str(kept), f"[green]{'█' * bar_kept}[/green]{'░' * (bar - bar_kept)}")
    console.print(t)


@stage
def command(
    scored: Annotated[list[str], typer.Argument(metavar="SCORED", help="Scored samples (from `sample -k K` then `evaluate`), or - for stdin.")],
    problems: Annotated[str, typer.Option("--problems", "-p", help="The problem JSONL the samples came from; kept problems are copied from it.")],
    band: Annotated[str, typer.Option("--band", help="Keep problems with LO <= pass rate <= HI (edges included), written LO,HI.")] = "0.1,0.9",
    limit: Annotated[Optional[int], typer.Option("--limit", help="Keep at most N in-band problems (the first N in --problems order).")] = None,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Write the kept problems here instead of stdout (overwritten).")] = None,
) -> None:
    """Keep the problems whose pass rate lies in --band, as problem records.

    Pass rate = correct / scored samples of a problem (k = 1 gives 0 or 1).
    Kept records are those of --problems, in its order, plus pass_rate and
    pass_samples. Prints a histogram of pass rates to stderr. Problems of --problems that
    have no scored sample are skipped and counted; a sample of a problem not
    in --problems is an error.
    """
    cfg = Config(*parse_band(band), limit=limit)
    if problems == "-" and "-" in scored:
        raise MctsPrefError("only one of SCORED and --problems can be - (stdin)")
    problem_recs = read_problems(problems)
    counts = read_scored(scored, {str(p["id"]) for p in problem_recs}, problems)
    if not counts:
        raise MctsPrefError(f"no scored samples in {', '.join(scored)}")
    kept, unsampled = select(problem_recs, counts, cfg)
    with RecordWriter(out) as w:
        w.write_many(kept)
    render_histogram(histogram(counts, cfg))
    in_band = sum(cfg.contains(Fraction(c, n)) for c, n in counts.values())
    capped = f" (--limit {cfg.limit} of {in_band} in band)" if len(kept) < in_band else ""
    skipped = f"; {unsampled} problems of {problems} had no samples and were skipped" if unsampled else ""
    console.print(f"curriculum: kept {len(kept)} of {len(counts)} sampled problems with pass rate in "
                  f"[{_show(cfg.lo)}, {_show(cfg.hi)}]{capped}{skipped}", highlight=False, markup=False, soft_wrap=True)
