"""`show-tree`: draw one search tree in the terminal, so people can read what the search did."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mcts_pref import html_report
from mcts_pref.console import console, stage
from mcts_pref.errors import MctsPrefError
from mcts_pref.trees import children_of, iter_trees, root_of


def _one_line(text: str, width: int = 60) -> str:
    text = " ".join(text.split()) or "∅"
    return text if len(text) <= width else text[: width - 1] + "…"


def _fmt(x: Any) -> str:
    return "-" if x is None else (f"{x:.2f}" if isinstance(x, float) else str(x))


def render_tree(rec: dict):
    """A rich Tree of one tree record: committed path bold green, terminals marked ✓/✗."""
    from rich.markup import escape
    from rich.tree import Tree

    kids = children_of(rec["nodes"])
    committed = set(rec["path"])

    def label(n: dict) -> str:
        mark = ""
        if n.get("terminal"):
            mark = "[green]✓[/] " if n.get("correct") else "[red]✗[/] "
        text = "(root)" if n["parent"] is None else escape(_one_line(n.get("text", "")))
        stats = (
            f"[dim]Q={_fmt(n.get('Q'))} N={_fmt(n.get('N'))} v={_fmt(n.get('value'))} "
            f"C={_fmt(n.get('self_eval'))} O={_fmt(n.get('outcome'))}[/]"
        )
        body = f"[bold green]{text}[/]" if n["id"] in committed else text
        return f"{mark}{body}  {stats}"

    verdict = "correct" if rec.get("correct") else "not correct"
    top = root_of(rec["nodes"])
    root = Tree(f"[b]{rec['problem_id']}[/] ({verdict}) " + label(top))
    stack = [(root, top)]
    while stack:
        branch, node = stack.pop()
        for c in kids.get(node["id"], []):
            stack.append((branch.add(label(c)), c))
    return root


@stage
def command(
    trees: Annotated[str, typer.Argument(help="Tree records written by search (JSONL path, or - for stdin).")],
    problem_id: Annotated[Optional[str], typer.Option("--id", help="Problem id of the tree to draw (optional if the file holds one).")] = None,
    html: Annotated[Optional[Path], typer.Option(
        "--html", help="Instead, write a self-contained HTML page to explore the file's trees (pairs.jsonl beside the "
                       "trees file marks the pairs; --id picks the tree it opens at).")] = None,
    max_trees: Annotated[int, typer.Option(
        "--trees", help="With --html: embed the file's first N trees (0: all; a 64-node tree is about 10 kB).")] = html_report.DEFAULT_TREES,
) -> None:
    """Draw one search tree: each step on one line with Q, N, value, self-eval C and outcome O."""
    # A malformed tree is a file:line error, not a traceback.
    recs = [rec for _, _, rec in iter_trees(trees, need_prompt=False)]
    if not recs:
        raise MctsPrefError(f"{trees}: no tree records")
    if html is not None:
        console.print(html_report.write_page(html_report.file_data(trees, recs, max_trees, problem_id), html),
                      markup=False, highlight=False)
        return
    if problem_id is None and len(recs) == 1:
        rec = recs[0]
    else:
        rec = next((r for r in recs if str(r["problem_id"]) == problem_id), None)
        if rec is None:
            some = ", ".join(str(r["problem_id"]) for r in recs[:5]) + (", ..." if len(recs) > 5 else "")
            what = "pass --id" if problem_id is None else f"no tree with problem id {problem_id!r}"
            raise MctsPrefError(f"{trees}: {what}; available ids: {some}")
    console.print(render_tree(rec))
