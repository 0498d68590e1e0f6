"""One self-contained HTML page of a run: accuracy per round, compute, paired tests, and a tree explorer.

``report RUN --html PAGE`` and ``show-tree TREES --html PAGE`` write it. The
page is a single file that opens from disk: the data sits in it as JSON, the
CSS and JS (``report_assets/``) inline, and its Content-Security-Policy
forbids every network request and every script but its own (by hash).

Step texts are model output, so nothing from the data is ever parsed as
markup: the script builds the DOM with ``textContent`` only, and the JSON is
embedded with ``<``, ``>``, ``&``, U+2028 and U+2029 written as ``\\uXXXX``,
so no ``</script>`` or ``<!--`` in a step can end or bend the script element.

Size: a node keeps only what the explorer shows (no log-probs or token
counts, floats to 4 significant digits, key names once per tree), about 150
bytes plus its text; a demo round (64 trees of ~20 nodes) is about 0.2 MB. A
round embeds its first ``max_trees`` trees in file order (default 64, 0 for
all), so a bigger run grows the page by rounds, not by trees; the page says
how many trees it left out, and the run view's numbers count every tree.

Pairs (``pairs.jsonl`` beside ``trees.jsonl``) carry no node ids. A pair is
put on its tree the way ``extract-pairs`` made it: its parent is the committed
path node one step above its ``depth``, its ``prompt`` is the tree prompt plus
the path texts down to that parent, and its ``chosen`` / ``rejected`` text is
a child's text plus those of the child's single-child chain below it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Optional

from mcts_pref import __version__
from mcts_pref.errors import MctsPrefError
from mcts_pref.trees import chain_of, children_of

DEFAULT_TREES = 64  # trees embedded per round; a demo round searches 64
# Node keys the explorer shows, in display order.
NODE_KEYS = ("id", "parent", "text", "N", "Q", "prior", "draws", "check", "values", "value", "self_eval", "outcome",
             "reward", "commit_Q", "commit_N", "rollouts", "terminal", "correct", "finish")
PAIR_KEYS = ("depth", "q_chosen", "q_rejected", "n_chosen", "n_rejected", "label_smoothing")
# Written as \uXXXX inside the page's JSON: HTML-significant, or line terminators to older JS parsers.
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


# ---------------------------------------------------------------- reading


def read_jsonl_tolerant(path: Path) -> list[dict]:
    """The JSON objects of a file that may still be written (a torn last line is skipped); [] if absent."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").split("\n"):
        if line.strip():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


def _is_tree(rec: dict) -> bool:
    nodes, path = rec.get("nodes"), rec.get("path")
    return (isinstance(nodes, list) and bool(nodes) and isinstance(path, list) and bool(path)
            and all(isinstance(n, dict) and "id" in n and "parent" in n for n in nodes))


# ---------------------------------------------------------------- shaping


def compact(x: Any) -> Any:
    """Floats to 4 significant digits, non-finite floats to None, recursively (JSON has no NaN)."""
    if isinstance(x, float):
        return float(f"{x:.4g}") if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): compact(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [compact(v) for v in x]
    return x


def _shown(key: str, v: Any) -> Any:
    """The value the explorer shows, or None for one that says nothing (false terminal, no rollouts, a plain step)."""
    if (key == "terminal" and v is False) or (key == "rollouts" and v == 0) or (key == "values" and not v):
        return None
    if key == "finish" and v in ("", "step"):
        return None
    return v


def node_table(nodes: list[dict]) -> dict:
    """Nodes as one row per node under shared keys (names once, not per node: a third of the size);
    a row stops at its last non-null value."""
    rows = []
    for node in nodes:
        row = [_shown(k, node.get(k)) for k in NODE_KEYS]
        while row and row[-1] is None:
            row.pop()
        rows.append(row)
    return {"keys": list(NODE_KEYS), "rows": rows}


def _chain_text(node: dict, kids: dict) -> str:
    """The node's text plus that of each only child below it (how extract-pairs merges a chain)."""
    return "".join(n.get("text", "") for n in chain_of(node, kids))


def place_pairs(tree: dict, pairs: Iterable[dict]) -> list[dict]:
    """The tree's pairs, each with ``chosen_node`` / ``rejected_node`` ids (None where no node matches)."""
    nodes = {n["id"]: n for n in tree["nodes"]}
    kids = children_of(tree["nodes"])
    path = tree["path"]
    prefixes = []  # prompt + committed texts down to path[i]
    text = str(tree.get("prompt", ""))
    for node_id in path:
        text += nodes.get(node_id, {}).get("text", "")
        prefixes.append(text)
    out = []
    for pair in pairs:
        placed = {k: pair.get(k) for k in PAIR_KEYS}
        placed["chosen_node"] = placed["rejected_node"] = None
        depth = pair.get("depth")
        if isinstance(depth, int) and 1 <= depth <= len(path):
            # Pairs made before the prompt was kept in trees cannot be checked against it; depth then decides.
            if "prompt" not in tree or pair.get("prompt") == prefixes[depth - 1]:
                by_text = {}
                for child in kids.get(path[depth - 1], []):
                    by_text.setdefault(_chain_text(child, kids), child["id"])
                placed["chosen_node"] = by_text.get(pair.get("chosen"))
                placed["rejected_node"] = by_text.get(pair.get("rejected"))
        if placed["chosen_node"] is None or placed["rejected_node"] is None:
            placed["chosen"], placed["rejected"] = pair.get("chosen"), pair.get("rejected")  # shown as text instead
        out.append(placed)
    return out


def tree_view(tree: dict, pairs: list[dict]) -> dict:
    """One tree as the explorer reads it."""
    return {
        "problem_id": str(tree.get("problem_id")),
        "question": tree.get("question"),
        "answer": tree.get("answer"),
        "correct": tree.get("correct"),
        "path": tree["path"],
        "stats": {k: v for k, v in (tree.get("stats") or {}).items() if v not in (None, 0)},
        "nodes": node_table(tree["nodes"]),
        "pairs": place_pairs(tree, pairs),
    }


def round_view(name: str, trees: list[dict], pairs: list[dict], max_trees: int = DEFAULT_TREES,
               keep: Optional[str] = None) -> dict:
    """One round (or one trees file): its first ``max_trees`` trees (0: all; ``keep`` is always kept) and a summary."""
    good = [t for t in trees if _is_tree(t)]
    by_problem: dict = {}
    for p in pairs:
        by_problem.setdefault(str(p.get("problem_id")), []).append(p)
    shown = good if max_trees <= 0 else good[:max_trees]
    if keep is not None and all(str(t.get("problem_id")) != keep for t in shown):
        shown = shown + [t for t in good if str(t.get("problem_id")) == keep][:1]
    views = [tree_view(t, by_problem.get(str(t.get("problem_id")), [])) for t in shown]
    n_nodes = [len(t["nodes"]) for t in good]
    return {
        "name": name,
        "config": good[0].get("config") if good else None,
        "policy": good[0].get("policy") if good else None,
        "summary": {
            "trees": len(good),
            "skipped_records": len(trees) - len(good),
            "correct": sum(1 for t in good if t.get("correct")),
            "pairs": len(pairs),
            "trees_with_pairs": sum(1 for t in good if str(t.get("problem_id")) in by_problem),
            "mean_nodes": sum(n_nodes) / len(n_nodes) if n_nodes else None,
            "tokens": sum(int((t.get("stats") or {}).get("tokens", 0) or 0) for t in good),
        },
        "shown": len(views),
        "trees": views,
    }


def run_data(run: Path, rows: list[dict], max_trees: int = DEFAULT_TREES) -> dict:
    """The page data of a loop run: ``rows`` from ``report.collect(run)`` plus every stage that has trees."""
    rounds = []
    for row in rows:
        d = run / row["name"]
        if (d / "trees.jsonl").exists():
            rounds.append(round_view(row["name"], read_jsonl_tolerant(d / "trees.jsonl"),
                                     read_jsonl_tolerant(d / "pairs.jsonl"), max_trees))
    return {"title": f"MCTS-DPO run {run}", "rows": rows, "rounds": rounds, "max_trees": max_trees}


def trees_data(name: str, trees: list[dict], pairs: list[dict], max_trees: int = DEFAULT_TREES,
               select: Optional[str] = None, title: Optional[str] = None) -> dict:
    """The page data of one trees file (``show-tree --html``): no run view, one round called ``name``."""
    if select is not None and all(str(t.get("problem_id")) != select for t in trees):
        raise MctsPrefError(f"{name}: no tree with problem id {select!r}")
    rv = round_view(name, trees, pairs, max_trees, keep=select)
    return {"title": title or f"search trees {name}", "rows": None, "rounds": [rv], "max_trees": max_trees,
            "select": {"round": name, "problem": select} if select is not None else None}


def file_data(trees_path: str, trees: list[dict], max_trees: int = DEFAULT_TREES, select: Optional[str] = None) -> dict:
    """:func:`trees_data` of a trees file, with the pairs of ``pairs.jsonl`` beside it (as the loop writes them), if any."""
    if select is not None and all(str(t.get("problem_id")) != select for t in trees):
        raise MctsPrefError(f"{trees_path}: no tree with problem id {select!r}")
    pairs = [] if trees_path == "-" else read_jsonl_tolerant(Path(trees_path).parent / "pairs.jsonl")
    return trees_data("<stdin>" if trees_path == "-" else Path(trees_path).name, trees, pairs, max_trees, select,
                      title=f"search trees {'<stdin>' if trees_path == '-' else trees_path}")


# ---------------------------------------------------------------- the page


def embed_json(data: Any) -> str:
    """``data`` as JSON that is inert inside a ``<script type="application/json">`` element."""
    text = json.dumps(compact(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for ch, esc in _JSON_ESCAPES.items():
        text = text.replace(ch, esc)
    return text


def _asset(name: str) -> str:
    return (resources.files("mcts_pref") / "report_assets" / name).read_text(encoding="utf-8")


def render_page(data: dict) -> str:
    """The whole page as one string. The template's markers are filled by trusted assets first, the data last."""
    page, css, js = _asset("page.html"), _asset("explorer.css"), _asset("explorer.js")
    digest = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode("ascii")
    page = page.replace("__SCRIPT_SHA256__", digest).replace("/*__CSS__*/", css).replace("/*__JS__*/", js)
    head, marker, tail = page.partition("__DATA__")
    if not marker or "__DATA__" in tail:
        raise MctsPrefError("report_assets/page.html must hold exactly one __DATA__ marker")
    return head + embed_json({**data, "version": __version__}) + tail


def write_page(data: dict, path: Path) -> str:
    """Write the page; returns a one-line note for stderr (size, and how many trees each round left out)."""
    text = render_page(data)
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise MctsPrefError(f"--html {path}: {e.strerror or e}") from None
    size = len(text.encode("utf-8"))
    cut = [f"{r['name']} {r['shown']} of {r['summary']['trees']}" for r in data["rounds"]
           if r["shown"] < r["summary"]["trees"]]
    note = f"wrote {path} ({size / 1e6:.2f} MB)"
    if cut:
        note += f"; trees embedded: {', '.join(cut)} (--trees N to change, 0 for all)"
    return note
