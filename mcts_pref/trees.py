"""The tree record: its checks and how to walk it (root, children, depth, committed path).

The search engine (``mcts.py``) writes tree records with :func:`tree_record`; ``extract-pairs``,
``show-tree`` and the HTML explorer read them through this module, so a
malformed tree is one ``path:line`` error everywhere and each walk is
written once. The record's keys are in DESIGN.md; the keys checked here are
the ones the readers rely on.
"""

from __future__ import annotations

from numbers import Real
from typing import Iterator, Optional

from mcts_pref.errors import RecordError
from mcts_pref.records import iter_records
from mcts_pref.tasks import resolve_task

NODE_KEYS = ("id", "parent", "text", "Q", "N")


def tree_record(problem: dict, prompt: str, policy: str, config: dict, nodes: list[dict], path: list[int],
                correct: bool, stats: dict) -> dict:
    """The ``tree`` record (DESIGN): problem fields, config, nodes in id order, committed path, stats."""
    rec = {
        "problem_id": str(problem["id"]),
        "question": problem["question"],
        "answer": problem["answer"],
        "task": resolve_task(problem.get("task")),
    }
    for key in ("choices", "source"):  # the checker's task rules are looked up by source
        if problem.get(key) is not None:
            rec[key] = problem[key]
    rec.update(prompt=prompt, policy=policy, config=config, nodes=nodes, path=path, correct=correct, stats=stats)
    return rec


def is_correct(tree: dict) -> Optional[bool]:
    """The committed path's correctness: the tree flag, else the leaf node's."""
    if isinstance(tree.get("correct"), bool):
        return tree["correct"]
    leaf = next((n for n in tree["nodes"] if n["id"] == tree["path"][-1]), {})
    return leaf.get("correct") if isinstance(leaf.get("correct"), bool) else None


# --- validation --------------------------------------------------------------


def _is_number(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def check_tree(tree: dict, path: str, line: int, need_correct: bool = False, need_prompt: bool = True) -> None:
    """Structural checks beyond required keys, failing with path:line.

    ``need_prompt=False`` (show-tree) accepts a tree without its ``prompt``:
    drawing does not need it, pairs do.
    """

    def bad(msg: str) -> RecordError:
        return RecordError(path, line, f"tree {tree.get('problem_id')!r}: {msg}")

    if need_prompt and not isinstance(tree.get("prompt"), str):
        raise bad("missing string key 'prompt' (the formatted prompt the steps continue)")
    nodes = tree["nodes"]
    if not isinstance(nodes, list) or not nodes:
        raise bad("'nodes' must be a non-empty list")
    by_id: dict = {}
    for k, node in enumerate(nodes):
        if not isinstance(node, dict):
            raise bad(f"nodes[{k}] is not an object")
        for key in NODE_KEYS:
            if key not in node:
                raise bad(f"nodes[{k}] is missing key '{key}'")
        if not isinstance(node["id"], int) or node["id"] in by_id:
            raise bad(f"nodes[{k}] has a non-integer or duplicate id {node['id']!r}")
        if not isinstance(node["text"], str):
            raise bad(f"node {node['id']}: 'text' must be a string")
        if node["Q"] is not None and not _is_number(node["Q"]):
            raise bad(f"node {node['id']}: 'Q' must be a number or null")
        if not isinstance(node["N"], int) or node["N"] < 0:
            raise bad(f"node {node['id']}: 'N' must be an integer >= 0")
        check_node_evidence(node, bad)
        by_id[node["id"]] = node
    roots = [n["id"] for n in nodes if n["parent"] is None]
    if len(roots) != 1:
        raise bad(f"expected exactly one root (parent null), found {len(roots)}")
    for node in nodes:
        if node["parent"] is not None and node["parent"] not in by_id:
            raise bad(f"node {node['id']} has parent {node['parent']!r}, which is not a node in this tree")
    depth = node_depths(nodes)
    for node in nodes:
        if node["id"] not in depth:
            raise bad(f"node {node['id']} does not reach the root (parent links form a cycle)")
        if "depth" in node and node["depth"] != depth[node["id"]]:
            raise bad(f"node {node['id']} has depth {node['depth']!r} but its parent links put it at {depth[node['id']]}")
    steps = tree["path"]
    if not isinstance(steps, list) or not steps:
        raise bad("'path' must be a non-empty list of node ids")
    if not all(isinstance(i, int) for i in steps):
        raise bad("'path' must hold integer node ids")
    if steps[0] != roots[0]:
        raise bad(f"path starts at {steps[0]!r}, not at the root {roots[0]}")
    for prev, cur in zip(steps, steps[1:]):
        if cur not in by_id:
            raise bad(f"path id {cur!r} is not a node in this tree")
        if by_id[cur]["parent"] != prev:
            raise bad(f"path goes {prev} -> {cur}, but node {cur}'s parent is {by_id[cur]['parent']}")
    if need_correct and is_correct(tree) is None:
        raise bad("no 'correct' flag on the tree or its committed leaf (needed by --only-correct-trees; pass --all-trees)")


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def check_node_evidence(node: dict, bad) -> None:
    """The optional keys the pair rules read: commit_Q / commit_N, rollouts, values."""
    where = f"node {node['id']}"
    if node.get("commit_Q") is not None:
        if not _is_number(node["commit_Q"]):
            raise bad(f"{where}: 'commit_Q' must be a number or null")
        if not _is_count(node.get("commit_N")):
            raise bad(f"{where}: 'commit_N' must be an integer >= 0 when 'commit_Q' is set")
    elif node.get("commit_N") is not None and not _is_count(node["commit_N"]):
        raise bad(f"{where}: 'commit_N' must be an integer >= 0 or null")
    if node.get("rollouts") is not None and not _is_count(node["rollouts"]):
        raise bad(f"{where}: 'rollouts' must be an integer >= 0 or null")
    values = node.get("values")
    if values is not None:
        if not isinstance(values, dict):
            raise bad(f"{where}: 'values' must be an object of value terms")
        for term, v in values.items():
            if v is not None and not _is_number(v):
                raise bad(f"{where}: values[{term!r}] must be a number or null")


def node_depths(nodes: list[dict]) -> dict:
    """Depth of every node reachable from the root (root = 0)."""
    kids = children_of(nodes)
    root = root_of(nodes)
    depth, stack = {root["id"]: 0}, [root]
    while stack:
        node = stack.pop()
        for child in kids.get(node["id"], []):
            if child["id"] not in depth:
                depth[child["id"]] = depth[node["id"]] + 1
                stack.append(child)
    return depth


def root_of(nodes: list[dict]) -> dict:
    """The root node (parent null); a checked tree has exactly one, and its id need not be 0."""
    return next(n for n in nodes if n["parent"] is None)


def children_of(nodes: list[dict]) -> dict:
    """parent id -> its child nodes, in file order."""
    kids: dict = {}
    for node in nodes:
        if node["parent"] is not None:
            kids.setdefault(node["parent"], []).append(node)
    return kids


def iter_trees(path: str, need_correct: bool = False, need_prompt: bool = True) -> Iterator[tuple[str, int, dict]]:
    """``(shown path, line, tree)`` of every tree in ``path``, each checked by :func:`check_tree`."""
    shown = "<stdin>" if path == "-" else path
    for line, tree in iter_records(path, "tree"):
        check_tree(tree, shown, line, need_correct, need_prompt)
        yield shown, line, tree


def chain_of(node: dict, kids: dict) -> list[dict]:
    """The candidate and its single-child chain: the nodes a merged side is made of."""
    chain = [node]
    while len(kids.get(chain[-1]["id"], [])) == 1:
        chain.append(kids[chain[-1]["id"]][0])
    return chain
