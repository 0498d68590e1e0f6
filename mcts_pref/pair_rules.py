"""Pure rules behind `extract-pairs`: which statistics, which eps, which step went wrong.

Each rule reads plain node dicts (tree records' ``nodes``) and nothing else,
so each is tested on hand-built trees (tests/test_pairs.py).

- Statistics: a child's ``commit_Q`` / ``commit_N`` are its Q and N at the
  moment its parent committed. After the commit the committed child keeps
  collecting visits while its siblings stay frozen, which shrinks eps and can
  swap a pair, so the commit-time numbers are the fair comparison. Older trees
  (and parents the search never committed) have none: then ``Q`` / ``N``.
- Visits for ``--min-visits``: commit-time N plus the node's ``rollouts``
  (each rollout is one more sampled look at the node's future).
- Label smoothing (conservative DPO): ``paper`` eps = N_rej / (N_cho + N_rej);
  ``add-one`` eps = (N_rej + 1) / (N_cho + N_rej + 2), a uniform prior on the
  ranking, so a rejected side the search never visited is not fully trusted.
  Both are capped at 0.5 (eps > 0.5 would flip the preference).
- Paper pairs (``--pairs paper``): :func:`paper_choices`, highest vs lowest
  Q child at every committed step.
- First-error pairs (``--pairs first-error``, Step-DPO / Self-Explore style):
  :func:`first_error`, the first committed step whose evidence dropped
  (:func:`step_signal` < 0) vs its best sibling whose evidence did not.
"""

from __future__ import annotations

import random
from typing import Optional

from mcts_pref.tree import FORCED_TERMINAL  # the step was cut at --max-depth, not a real end

EPS_RULES = ("paper", "add-one")
# Value terms that say nothing about a step being wrong: self-evaluation is a
# probability in [0, 1] (never "below zero") and measured as noise on small policies.
NOT_EVIDENCE = ("self_eval",)

Stats = dict  # node id -> (q, n): the statistics a sibling set is compared with


def label_smoothing(n_chosen: int, n_rejected: int, rule: str = "paper") -> float:
    """Conservative-DPO eps in [0, 0.5] from the two sides' visit counts.

    ``paper``: min(N_rej / (N_cho + N_rej), 0.5), 0 when both are 0.
    ``add-one``: min((N_rej + 1) / (N_cho + N_rej + 2), 0.5), 0.5 when both are 0.
    """
    if rule == "add-one":
        return min((n_rejected + 1) / (n_chosen + n_rejected + 2), 0.5)
    if rule != "paper":
        raise ValueError(f"unknown eps rule {rule!r}; expected one of {', '.join(EPS_RULES)}")
    total = n_chosen + n_rejected
    return 0.0 if total <= 0 else min(n_rejected / total, 0.5)


def sibling_stats(siblings: list[dict]) -> Stats:
    """``{id: (Q, N)}`` of the scored siblings, as their parent committed.

    The whole set uses ``commit_Q`` / ``commit_N`` when any sibling has a
    non-null ``commit_Q`` (a sibling without one was unscored at the commit and
    is no candidate); otherwise the final ``Q`` / ``N`` (older trees, or a
    parent the search never committed). Never a mix of the two.
    """
    if any(s.get("commit_Q") is not None for s in siblings):
        return {s["id"]: (s["commit_Q"], s["commit_N"]) for s in siblings if s.get("commit_Q") is not None}
    return {s["id"]: (s["Q"], s["N"]) for s in siblings if s["Q"] is not None}


def visits(node: dict, n: int) -> int:
    """Visits for ``--min-visits``: ``n`` (the compared N) plus the node's ``rollouts``, if any."""
    return n + (node.get("rollouts") or 0)


def pair_terminal(end: dict) -> bool:
    """Whether a pair marks a side ending at ``end`` terminal (EOS trained after it).

    A step forced terminal at --max-depth ended for lack of room, not because
    the policy finished: training an EOS after it would teach stopping mid-solution.
    """
    return bool(end.get("terminal", False)) and end.get("finish") != FORCED_TERMINAL


def step_signal(node: dict, parent: dict, q: float) -> float:
    """How the step ``parent -> node`` changed the evidence; < 0 marks an erroneous step.

    With a ``values`` dict on ``node`` (per value term): the step's reward on
    the evidence terms, i.e. the sum over the node's non-null terms other than
    ``self_eval`` of ``values[t](node) - values[t](parent)`` (a term the
    parent lacks or has as null counts 0 there: the root is never valued).
    This is the search's own ``r = v(child) - v(parent)``, unweighted and
    without self-evaluation. It drops below zero exactly at a step with a
    false claim (``checker``, path sum or gate), at a wrong final answer
    (``outcome`` -1), or where fewer rollouts reach the right answer than from
    the parent (``rollout``). No evidence term: 0 (nothing says it went wrong).

    Without ``values`` (older trees): ``q``, the node's commit-time Q, which
    is E[v(frontier below)] - v(parent): below zero when the step's subtree
    ended worse than its parent stood.
    """
    values = node.get("values")
    if not isinstance(values, dict):
        return q
    before = parent.get("values") if isinstance(parent.get("values"), dict) else {}
    return sum(v - (before.get(t) or 0.0) for t, v in values.items() if t not in NOT_EVIDENCE and v is not None)


def first_error(path: list[int], nodes: dict, kids: dict) -> Optional[tuple[int, int, Stats]]:
    """The first erroneous committed step and its best sibling judged good, or None.

    Walking the committed ``path`` (node ids, root first) down, the first node
    whose :func:`step_signal` is < 0 is the first error: the rejected side.
    The chosen side is the sibling with the highest signal among those with
    signal >= 0 (ties: higher Q, then more visits, then lower id). Q, N and
    the signals use :func:`sibling_stats`. Only the first error counts: below
    it every prefix already holds the error. No good sibling (or none at all):
    None, and no later step is tried. Returns ``(rejected_id, chosen_id, stats)``.
    """
    for parent_id, node_id in zip(path, path[1:]):
        siblings = kids.get(parent_id, [])
        stats = sibling_stats(siblings)
        if node_id not in stats:
            continue  # an unscored path step carries no judgement
        parent = nodes[parent_id]
        signal = {i: step_signal(nodes[i], parent, q) for i, (q, _) in stats.items()}
        if signal[node_id] >= 0:
            continue
        good = [i for i in stats if i != node_id and signal[i] >= 0]
        if not good:
            return None
        chosen = max(good, key=lambda i: (signal[i], stats[i][0], stats[i][1], -i))
        return node_id, chosen, stats
    return None


def paper_choices(tree: dict, kids: dict, rejected: str = "lowest", min_margin: float = 0.0, seed: int = 0):
    """``(parent_id, chosen, rejected, stats)`` per committed path node, the paper's rule.

    Candidates: the node's children scored in :func:`sibling_stats`, at least
    two. chosen = highest Q; rejected = lowest Q (``rejected="random"``: a
    random other child, seeded per tree and node). Kept only if
    Q_chosen - Q_rejected > max(min_margin, 0).
    """
    for parent_id in tree["path"]:
        siblings = kids.get(parent_id, [])
        stats = sibling_stats(siblings)
        candidates = [c for c in siblings if c["id"] in stats]
        if len(candidates) < 2:
            continue

        def rank(node: dict) -> tuple:
            # Ties on Q go to the more visited child, then the earlier one: deterministic.
            q, n = stats[node["id"]]
            return (q, n, -node["id"])

        chosen = max(candidates, key=rank)
        if rejected == "random":
            # Seeded per tree and node, so a pair does not depend on file order.
            rng = random.Random(f"{seed}:{tree['problem_id']}:{parent_id}")
            worse = rng.choice([c for c in candidates if c is not chosen])
        else:
            worse = min(candidates, key=rank)
        # Equal Q says nothing about which step is better, whatever --min-margin is.
        if stats[chosen["id"]][0] - stats[worse["id"]][0] <= max(min_margin, 0.0):
            continue
        yield parent_id, chosen, worse, stats
