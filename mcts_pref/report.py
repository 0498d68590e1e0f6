"""`report`: one table per run directory of the loop, with paired tests between stages.

A run directory, as ``examples/mcts_dpo_loop.sh`` writes it::

    RUN/round-0/{samples,scored}.jsonl report.json            base policy
    RUN/round-K/trees.jsonl pairs.jsonl adapter/ samples.jsonl scored.jsonl report.json
    RUN/round-K/pool_samples.jsonl pool_scored.jsonl problems.jsonl   with CURRICULUM=1

Any other sub-directory holding a ``report.json`` (a baseline, say) gets a
row too. Compute is counted in generated tokens and training seconds, the
trade-off the paper studies: a stage's training data costs its search tokens,
plus the tokens sampled to pick its problems (``pool_samples.jsonl``, the
curriculum) or to make a baseline's pairs (``train_samples.jsonl``).

Every stage is also compared with round-0 on the same held-out problems, read
from each stage's ``scored.jsonl`` (the first record of each problem id, in
file order, when a problem has several samples); problems are paired by id.
``--compare A,B`` adds head-to-heads, ``--pool`` pools seeds (clustered by
problem when seeds share test problems, and with the seed as the unit as
well); the statistics are in :mod:`mcts_pref.stats`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from mcts_pref import html_report
from mcts_pref.console import stage
from mcts_pref.errors import MctsPrefError
from mcts_pref.records import validate
from mcts_pref.stats import dersimonian_laird, paired_test, seed_summary

BASE = "round-0"


def _jsonl(path: Path) -> list[dict]:
    return [rec for _, rec in _numbered(path)]


def _numbered(path: Path) -> list[tuple[int, dict]]:
    if not path.exists():
        return []
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if line.strip():
            try:
                out.append((i, json.loads(line)))
            except json.JSONDecodeError:
                pass  # a torn last line of a run still in progress
    return out


def correctness(stage_dir: Path) -> dict[str, bool] | None:
    """``problem_id -> correct`` from ``stage_dir/scored.jsonl`` (first sample per id); None without one."""
    path = stage_dir / "scored.jsonl"
    if not path.exists():
        return None
    out: dict[str, bool] = {}
    for line, rec in _numbered(path):
        validate(rec, "scored", path, line)
        out.setdefault(str(rec["problem_id"]), rec["correct"])
    return out


def _order(d: Path) -> tuple:
    m = re.fullmatch(r"round-(\d+)", d.name)
    return (0, int(m.group(1)), "") if m else (1, 0, d.name)


def collect(run: Path) -> list[dict]:
    """One row per stage directory of ``run``, each with its paired test against round-0."""
    if not run.is_dir():
        raise MctsPrefError(f"{run}: not a run directory")
    base = correctness(run / BASE)
    rows = []
    for d in sorted((p for p in run.iterdir() if p.is_dir()), key=_order):
        rep_path = d / "report.json"
        rep = json.loads(rep_path.read_text()) if rep_path.exists() else {}
        trees = _jsonl(d / "trees.jsonl")
        metrics = _jsonl(d / "adapter" / "metrics.jsonl")
        if not (rep or trees or metrics):
            continue
        mine = correctness(d)
        rows.append({
            "name": d.name,
            "accuracy": rep.get("accuracy"), "ci95": rep.get("ci95"), "n": rep.get("n_samples"),
            "trees": len(trees),
            "trees_correct": sum(1 for t in trees if t.get("correct")),
            "pairs": len(_jsonl(d / "pairs.jsonl")) if (d / "pairs.jsonl").exists() else None,
            "search_tokens": sum(int(t.get("stats", {}).get("tokens", 0)) for t in trees),
            # A baseline's training data comes from sampling instead of search.
            "data_sample_tokens": sum(int(s.get("n_tokens", 0)) for s in _jsonl(d / "train_samples.jsonl")),
            # Sampling the pool a curriculum round picked its search problems from.
            "curriculum_tokens": sum(int(s.get("n_tokens", 0)) for s in _jsonl(d / "pool_samples.jsonl")),
            # Each tree's share of the driver rounds it was in flight for; per-tree wall_s overlap.
            # Trees from before wall_share_s existed give None.
            "search_s": (round(sum(float(t["stats"]["wall_share_s"]) for t in trees), 3)
                         if trees and all("wall_share_s" in t.get("stats", {}) for t in trees) else None),
            "sample_tokens": sum(int(s.get("n_tokens", 0)) for s in _jsonl(d / "samples.jsonl")),
            "train_s": sum(float(m.get("seconds", 0.0)) for m in metrics),  # seconds per optimizer step
            "train_steps": int(metrics[-1].get("step", 0)) if metrics else 0,
            "vs_round0": paired_test([(base, mine)]) if base is not None and mine is not None and d.name != BASE else None,
        })
    if not rows:
        raise MctsPrefError(f"{run}: no round-*/ directories with results yet")
    return rows


def data_tokens(row: dict) -> int:
    """Tokens generated to make a stage's training data (search + curriculum or baseline sampling)."""
    return row["search_tokens"] + row["data_sample_tokens"] + row.get("curriculum_tokens", 0)


# ---------------------------------------------------------------- comparisons


@dataclass
class Comparison:
    """B against A in one or more strata (runs, seeds); each stratum is ``(label, dir A, dir B)``."""

    a: str
    b: str
    strata: list[tuple[str, Path, Path]]


def parse_compare(text: str) -> tuple[str, str]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise MctsPrefError(f"--compare wants two stages A,B (e.g. round-0,round-2 or runs/a/round-2,runs/b/round-2), "
                            f"got {text!r}")
    return parts[0], parts[1]


def _is_path(spec: str) -> bool:
    return "/" in spec


def _stage_dir(spec: str, run: Path | None) -> Path:
    d = Path(spec) if _is_path(spec) or run is None else run / spec
    if not (d / "scored.jsonl").exists():
        raise MctsPrefError(f"--compare {spec}: {d / 'scored.jsonl'} not found")
    return d


def build_comparisons(runs: list[Path], compares: list[tuple[str, str]], pool: bool) -> list[Comparison]:
    """The head-to-heads asked for, resolved to stage directories (missing ones fail here, up front).

    Every stage is compared with round-0 in each run that has both. A --compare
    side without '/' is a stage name, looked up in every run; a side with one
    is a stage directory. With --pool, path-only --compare pairs are pooled
    together as the seeds of one head-to-head.
    """
    out: list[Comparison] = []
    names = sorted({d.name for r in runs for d in r.iterdir() if (d / "scored.jsonl").exists()} - {BASE},
                   key=lambda n: _order(Path(n)))
    for name in names:
        strata = [(str(r), r / BASE, r / name) for r in runs
                  if (r / BASE / "scored.jsonl").exists() and (r / name / "scored.jsonl").exists()]
        if strata:
            out.append(Comparison(BASE, name, strata))
    by_path: list[tuple[str, str]] = []
    for a, b in compares:
        if _is_path(a) and _is_path(b):
            by_path.append((a, b))
        else:
            out.append(Comparison(a, b, [(str(r), _stage_dir(a, r), _stage_dir(b, r)) for r in runs]))
    strata = [("-", _stage_dir(a, None), _stage_dir(b, None)) for a, b in by_path]
    if pool and by_path:
        out.append(Comparison(" | ".join(a for a, _ in by_path), " | ".join(b for _, b in by_path), strata))
    else:
        out.extend(Comparison(a, b, [s]) for (a, b), s in zip(by_path, strata))
    return out


def run_comparison(c: Comparison, pool: bool) -> dict:
    """Per-stratum paired tests; with ``pool`` the pooled test and, over two or more strata, the seed-level ones.

    ``pooled`` is :func:`mcts_pref.stats.paired_test` over all strata (clustered
    by problem when they share problems). ``seeds`` takes each stratum's
    accuracy difference as one observation (:func:`mcts_pref.stats.seed_summary`);
    ``random_effects`` pools them by DerSimonian-Laird with each stratum's paired
    variance. Strata without a paired problem are left out of both.
    """
    pairs = [(correctness(da), correctness(db)) for _, da, db in c.strata]
    strata = [{"stratum": label, "a": str(da), "b": str(db), **paired_test([p])}
              for (label, da, db), p in zip(c.strata, pairs)]
    out = {"a": c.a, "b": c.b, "strata": strata, "pooled": paired_test(pairs) if pool else None,
           "seeds": None, "random_effects": None}
    usable = [s for s in strata if s["n"]]
    if pool and len(usable) >= 2:
        out["seeds"] = seed_summary([s["diff"] for s in usable])
        out["random_effects"] = dersimonian_laird([s["diff"] for s in usable], [s["se"] ** 2 for s in usable])
    return out


# ---------------------------------------------------------------- output


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _p(x: float) -> str:
    return f"{x:.3g}"


def render(rows: list[dict], console, title: str = "MCTS-DPO run") -> None:
    from rich import box
    from rich.table import Table

    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    t.caption = ("trees: searched (committed path correct); data: tokens generated for training data (search, "
                 "plus curriculum or baseline sampling); eval: tokens of the test samples; train: seconds")
    t.caption_justify = "left"
    for col in ("stage", "acc", "95% CI", "n", "trees", "pairs", "data", "train", "eval"):
        t.add_column(col, justify="left" if col == "stage" else "right", no_wrap=True)
    for r in rows:
        ci = "-" if not r["ci95"] else f"{100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f}"
        trees = f"{r['trees']} ({r['trees_correct']})" if r["trees"] else "-"
        t.add_row(r["name"], _pct(r["accuracy"]), ci, str(r["n"] or "-"), trees,
                  "-" if r["pairs"] is None else str(r["pairs"]),
                  f"{data_tokens(r):,}" if data_tokens(r) else "-",
                  f"{r['train_s']:.0f}" if r["train_s"] else "-", f"{r['sample_tokens']:,}" if r["sample_tokens"] else "-")
    console.print(t)


def _ci(ci: list[float] | None) -> str:
    return "-" if ci is None else f"{100 * ci[0]:+.1f} to {100 * ci[1]:+.1f}"


def _diff(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f}"


def _test_cells(s: dict) -> list[str]:
    return [str(s["n"]), _diff(s["diff"]), _ci(s["ci95"]), str(s["fixed"]), str(s["broken"]), _p(s["p"])]


def _pooled_rows(res: dict, name: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """The pooled row and the seed-level rows (label, cells), and the notes under the table on comparison ``name``."""
    pooled, notes = res["pooled"], []
    if pooled["test"] == "sign":
        rows = [(f"  pooled over {pooled['strata']}", _test_cells(pooled))]
    else:
        rows = [(f"  pooled over {pooled['strata']}, clustered by problem ({pooled['shared_problems']} problems in "
                 f">1 seed)", _test_cells(pooled))]
        how = (f"a Monte Carlo estimate from {pooled['draws']:,} random sign patterns"
               if pooled["test"] == "sign-flip-mc" else "every sign pattern counted")
        notes.append(f"{name}, pooled: the runs share test problems, so p is a sign-flip test over problems "
                     f"({how}); the sign test on fixed vs broken, which takes them as independent, would give "
                     f"{_p(pooled['p_if_independent'])}.")
    if res.get("seeds"):
        sd = res["seeds"]
        ci = None if sd["ci"] is None else [max(-1.0, sd["ci"][0]), min(1.0, sd["ci"][1])]
        rows.append((f"  seeds as the unit ({sd['n']})",
                     [str(sd["n"]), _diff(sd["mean"]), _ci(ci), str(sd["positive"]), str(sd["negative"]), _p(sd["p"])]))
    if res.get("random_effects"):
        re_ = res["random_effects"]
        ci = [max(-1.0, re_["ci"][0]), min(1.0, re_["ci"][1])]
        rows.append(("  random effects (DL)", [str(re_["k"]), _diff(re_["estimate"]), _ci(ci), "-", "-", _p(re_["p"])]))
        notes.append(f"{name}, random effects: Cochran's Q {re_['q']:.1f} on {re_['k'] - 1} df, I2 {100 * re_['i2']:.0f}%, "
                     f"tau {100 * re_['tau2'] ** 0.5:.1f} points.")
    return rows, notes


def render_comparisons(results: list[dict], console) -> None:
    """The paired-tests table: one row per test, or a heading row, one row per run and the pooled row."""
    from rich import box
    from rich.table import Table

    t = Table(title="paired tests on the same test problems (first sample of each)", title_justify="left",
              box=box.SIMPLE_HEAD)
    t.caption = ("fixed: wrong under A, right under B; broken: the reverse; diff: accuracy B - A in points with a "
                 "95% Wald CI on the paired differences (clustered by problem); p: exact two-sided sign test on fixed vs "
                 "broken. pooled: summed over runs (seeds); when runs share problems, p is a sign-flip test over "
                 "problems instead. seeds as the unit: mean of the per-seed diffs, Student t 95% CI, and in "
                 "fixed/broken the seeds with diff > 0 / < 0 and their sign test. random effects: DerSimonian-Laird, "
                 "normal CI and p. A t or random-effects interval is shown clipped to +-100")
    t.caption_justify = "left"
    t.add_column("B vs A", overflow="fold")
    notes: list[str] = []
    for col in ("n", "diff", "95% CI", "fixed", "broken", "p"):
        t.add_column(col, justify="right", no_wrap=True)
    for res in results:
        paths = _is_path(res["a"]) and _is_path(res["b"])
        # Path pairs name their own stages; name pairs are the same stages in each run.
        label = (lambda s: f"{s['b']} vs {s['a']}") if paths else (lambda s: s["stratum"])
        if len(res["strata"]) == 1 and not res["pooled"]:
            s = res["strata"][0]
            t.add_row(label(s) if paths else f"{res['b']} vs {res['a']}", *_test_cells(s))
            continue
        name = "--compare pairs" if paths else f"{res['b']} vs {res['a']}"
        t.add_row(name, style="bold")
        for s in res["strata"]:
            t.add_row(f"  {label(s)}", *_test_cells(s))
        if res["pooled"]:
            rows, more = _pooled_rows(res, name)
            for k, (label_, cells) in enumerate(rows):
                t.add_row(label_, *cells, style="bold" if k == 0 else None)
            notes += more
    console.print(t)
    for note in notes:
        console.print(note, highlight=False, markup=False)


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MctsPrefError("--plot needs matplotlib: pip install 'mcts-pref[plot]'") from None
    names = [r["name"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    acc = [100 * (r["accuracy"] or 0) for r in rows]
    err = [[100 * ((r["accuracy"] or 0) - r["ci95"][0]) if r["ci95"] else 0 for r in rows],
           [100 * (r["ci95"][1] - (r["accuracy"] or 0)) if r["ci95"] else 0 for r in rows]]
    ax1.errorbar(range(len(rows)), acc, yerr=err, fmt="o", capsize=4)
    ax1.set_xticks(range(len(rows)), names, rotation=30)
    ax1.set_ylabel("held-out accuracy (%)")
    ax1.set_title("accuracy per stage (95% CI)")
    search = [data_tokens(r) / 1e3 for r in rows]
    sample = [r["sample_tokens"] / 1e3 for r in rows]
    ax2.bar(names, search, label="training-data tokens (k)")
    ax2.bar(names, sample, bottom=search, label="eval sample tokens (k)")
    ax2.set_title("compute per stage")
    ax2.legend()
    ax2.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


@stage
def command(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN", help="Run directories written by examples/mcts_dpo_loop.sh (several: one per seed).")],
    compare: Annotated[Optional[list[str]], typer.Option(
        "--compare", help="Head-to-head A,B (repeatable): B against A on the same problems. A side without '/' is a "
                          "stage name looked up in every RUN (round-1,round-2); a side with '/' is a stage directory "
                          "(runs/s0/round-2,runs/s0-base/round-2).")] = None,
    pool: Annotated[bool, typer.Option(
        "--pool", help="Treat the RUNs as seeds: also pool every stage-vs-round-0 test and every --compare over them "
                       "(stratified exact sign test, or a sign-flip test clustered by problem when runs share problems; "
                       "pooled accuracy difference with 95% CI; the seed as the unit: mean, t interval, sign test over "
                       "seeds and a DerSimonian-Laird estimate); path-only --compare pairs are pooled together as the "
                       "seeds of one head-to-head.")] = False,
    plot_path: Annotated[Optional[Path], typer.Option("--plot", help="Also draw accuracy and compute per round to this PNG (one RUN).")] = None,
    html_path: Annotated[Optional[Path], typer.Option(
        "--html", help="Also write a self-contained HTML page (one RUN): accuracy, compute and paired tests per round, "
                       "and an explorer of every round's search trees and their pairs.")] = None,
    max_trees: Annotated[int, typer.Option(
        "--trees", help="With --html: trees embedded per round, the first N of each trees.jsonl (0: all; the tables "
                        "always count every tree).")] = html_report.DEFAULT_TREES,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables: one RUN alone gives its list of rows; "
                                                          "with several RUNs, --compare or --pool an object {runs, comparisons}.")] = False,
) -> None:
    """Accuracy per round on held-out problems, pairs, compute per stage, and paired tests.

    Every stage is tested against round-0 of its run on the same problems,
    paired by problem id (first scored sample per id): fixed (wrong before,
    right now), broken (the reverse), an exact two-sided sign test (binomial,
    p = 1 with no discordant pair), and the accuracy difference with a 95%
    Wald CI on the paired differences. --pool sums fixed and broken over the
    seeds (the exact conditional, Mantel-Haenszel-type test for paired binary
    data) and clusters the CI by problem id; when seeds share problems, the p
    comes from a sign-flip test over problems instead, since one problem's
    outcomes in several seeds are not independent. It also takes the seed as
    the unit: the mean per-seed difference with a t interval, a sign test over
    seeds and a DerSimonian-Laird random-effects estimate.
    """
    from rich.console import Console

    if html_path and len(runs) > 1:
        raise MctsPrefError("--html shows one run; pass one RUN")
    if plot_path and len(runs) > 1:
        raise MctsPrefError("--plot draws one run; pass one RUN")
    pairs = [parse_compare(c) for c in compare or []]
    tables = [(run, collect(run)) for run in runs]
    results = [run_comparison(c, pool) for c in build_comparisons(runs, pairs, pool)]
    if json_out:
        if len(runs) == 1 and not pairs and not pool:
            print(json.dumps(tables[0][1], indent=2))
        else:
            print(json.dumps({"runs": [{"run": str(r), "rows": rows} for r, rows in tables], "comparisons": results},
                             indent=2))
    else:
        console = Console()
        console = console if console.is_terminal else Console(width=100)
        for run, rows in tables:
            render(rows, console, "MCTS-DPO run" if len(runs) == 1 else f"MCTS-DPO run {run}")
        if results:
            render_comparisons(results, console)
    if plot_path:
        plot(tables[0][1], plot_path)
    if html_path:
        typer.echo(html_report.write_page(html_report.run_data(runs[0], tables[0][1], max_trees), html_path), err=True)
