"""`report`: one table (and optionally a plot) for a run directory of the loop.

A run directory, as ``examples/mcts_dpo_loop.sh`` writes it::

    RUN/round-0/{samples,scored}.jsonl report.json            base policy
    RUN/round-K/trees.jsonl pairs.jsonl adapter/ samples.jsonl scored.jsonl report.json

Any other sub-directory holding a ``report.json`` (a baseline, say) gets a
row too. Compute is counted in generated tokens (search, sample) and training
seconds, the trade-off the paper studies.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from mcts_pref.console import stage
from mcts_pref.records import MctsPrefError


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a torn last line of a run still in progress
    return out


def _order(d: Path) -> tuple:
    m = re.fullmatch(r"round-(\d+)", d.name)
    return (0, int(m.group(1)), "") if m else (1, 0, d.name)


def collect(run: Path) -> list[dict]:
    """One row per stage directory of ``run``."""
    if not run.is_dir():
        raise MctsPrefError(f"{run}: not a run directory")
    rows = []
    for d in sorted((p for p in run.iterdir() if p.is_dir()), key=_order):
        rep_path = d / "report.json"
        rep = json.loads(rep_path.read_text()) if rep_path.exists() else {}
        trees = _jsonl(d / "trees.jsonl")
        samples = _jsonl(d / "samples.jsonl")
        metrics = _jsonl(d / "adapter" / "metrics.jsonl")
        if not (rep or trees or metrics):
            continue
        rows.append({
            "name": d.name,
            "accuracy": rep.get("accuracy"), "ci95": rep.get("ci95"), "n": rep.get("n_samples"),
            "trees": len(trees),
            "trees_correct": sum(1 for t in trees if t.get("correct")),
            "pairs": len(_jsonl(d / "pairs.jsonl")) if (d / "pairs.jsonl").exists() else None,
            "search_tokens": sum(int(t.get("stats", {}).get("tokens", 0)) for t in trees),
            # A baseline's training data comes from sampling instead of search.
            "data_sample_tokens": sum(int(s.get("n_tokens", 0)) for s in _jsonl(d / "train_samples.jsonl")),
            "search_s": sum(float(t.get("stats", {}).get("wall_s", 0.0)) for t in trees),
            "sample_tokens": sum(int(s.get("n_tokens", 0)) for s in samples),
            "train_s": sum(float(m.get("seconds", 0.0)) for m in metrics),  # seconds per optimizer step
            "train_steps": int(metrics[-1].get("step", 0)) if metrics else 0,
        })
    if not rows:
        raise MctsPrefError(f"{run}: no round-*/ directories with results yet")
    return rows


def render(rows: list[dict], console) -> None:
    from rich import box
    from rich.table import Table

    t = Table(title="MCTS-DPO run", title_justify="left", box=box.SIMPLE_HEAD)
    t.caption = ("trees: searched (committed path correct); data: tokens generated for training data "
                 "(search, or sampling for a baseline); eval: tokens of the test samples; train: seconds")
    t.caption_justify = "left"
    for col in ("stage", "acc", "95% CI", "n", "trees", "pairs", "data", "train", "eval"):
        t.add_column(col, justify="left" if col == "stage" else "right", no_wrap=True)
    for r in rows:
        acc = "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%"
        ci = "-" if not r["ci95"] else f"{100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f}"
        trees = f"{r['trees']} ({r['trees_correct']})" if r["trees"] else "-"
        t.add_row(r["name"], acc, ci, str(r["n"] or "-"), trees, "-" if r["pairs"] is None else str(r["pairs"]),
                  f"{r['search_tokens'] + r['data_sample_tokens']:,}" if r["search_tokens"] + r["data_sample_tokens"] else "-",
                  f"{r['train_s']:.0f}" if r["train_s"] else "-", f"{r['sample_tokens']:,}" if r["sample_tokens"] else "-")
    console.print(t)


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
    search = [(r["search_tokens"] + r["data_sample_tokens"]) / 1e3 for r in rows]
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
    run: Annotated[Path, typer.Argument(help="A run directory written by examples/mcts_dpo_loop.sh.")],
    plot_path: Annotated[Optional[Path], typer.Option("--plot", help="Also draw accuracy and compute per round to this PNG.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the rows as JSON instead of a table.")] = False,
) -> None:
    """Accuracy per round on held-out problems, pairs per round, and compute per stage."""
    from rich.console import Console

    rows = collect(run)
    if json_out:
        print(json.dumps(rows, indent=2))
    else:
        console = Console()
        render(rows, console if console.is_terminal else Console(width=100))
    if plot_path:
        plot(rows, plot_path)
