"""Step-level preference pairs and PRM step labels from search trees (no model); `extract-pairs` is extract_pairs.py.

Rules (MCTS-DPO, Xie et al. 2024, as their code runs them), ``--pairs paper``:

- Walk the committed path. At every path node with >= 2 scored children,
  the children are the candidates for the next step: chosen = highest Q,
  rejected = lowest Q (``--rejected random``: a seeded random other child,
  which is what the paper's code does). Q and N are the children's
  statistics when their parent committed (``commit_Q`` / ``commit_N``),
  else the final ``Q`` / ``N`` (older trees): see ``pair_rules``.
- A candidate whose subtree is a single chain (one child, which has one
  child, ...) is merged with that chain: its text is the candidate's text
  plus each only child's, stopping below the first node with != 1 child.
- A pair is kept only if ``q_chosen - q_rejected > --min-margin`` (so equal
  Q never makes a pair) and the two texts differ.
- ``label_smoothing`` from the two visit counts, ``--eps paper`` (default)
  min(N_rej / (N_cho + N_rej), 0.5) or ``--eps add-one``
  min((N_rej + 1) / (N_cho + N_rej + 2), 0.5) (conservative DPO: the less
  the search trusted the ranking, the more the labels are smoothed).
- By default only trees whose committed path is correct are used (the
  paper's filter); ``--all-trees`` keeps every tree.

``--pairs first-error`` (Step-DPO / Self-Explore style) makes at most one pair
per tree, from any tree (right or wrong answer, unless --only-correct-trees is
given): the first committed step judged wrong (rejected) against its best
sibling judged good (chosen); ``pair_rules.first_error`` defines both.

Filters for both rules: ``--min-visits M`` keeps a pair only if both sides
were visited (commit-time N plus the node's ``rollouts``) at least M times;
``--checked`` drops a pair whose shared prefix (the committed steps before
the candidates) or chosen side (each step of a merged chain) holds a claim the
step checker (``check.py``) finds false.

A side ending at a step forced terminal at --max-depth (``finish`` is
``max_depth``) is not marked terminal, so train-dpo appends no EOS after it.

The pair ``prompt`` is the tree's prompt plus the texts of the path nodes
down to the candidates' parent, so ``prompt + chosen`` is exactly the text
the policy scored: a pair file trains unchanged in TRL's DPO.

PRM step labels: one record per scored root-to-leaf path. A step's label
is, for a terminal node with a known ``correct``, that flag; otherwise True
iff the step's subtree contains a correct terminal node or its final ``Q`` > 0
(the search rated it above its parent). Two layouts:

- ``--format prm`` (or ``--prm-out``): TRL <= 1.13 stepwise supervision,
  ``{"prompt", "completions", "labels"}`` with one bool per step, for TRL's
  ``PRMTrainer`` (``trl.experimental.prm`` in 1.13; 1.14 removed it, as the
  1.13.0 and 1.14.0 wheels show). Completions drop the step's trailing
  newline because that trainer joins steps with its own separator.
- ``--format prm-openrlhf``: OpenRLHF's PRM dataset, ``{"input", "label"}``,
  for ``openrlhf.cli.train_prm`` (OpenRLHF <= 0.9.5: 0.9.6 removed its PRM
  trainer and dataset). ``input`` is the prompt and the steps, one per line,
  each followed by a space and the placeholder (``--placeholder``, default
  ``ки`` as in Math-Shepherd); ``label`` has one ``"+"`` / ``"-"`` per step.
  Checked against OpenRLHF's own code (repository OpenRLHF/OpenRLHF, and the
  0.9.5 wheel on PyPI): ``openrlhf/cli/train_prm.py`` reads the columns named
  by ``--input_key`` (default ``input``) and ``--label_key`` (default
  ``label``) and takes ``--placeholder_token`` and ``--reward_tokens``;
  ``openrlhf/datasets/process_reward_dataset.py`` tokenizes ``input`` as it
  is (no chat template, no special tokens added), finds the placeholder by
  its token id (``openrlhf/utils/utils.py``, ``convert_token_to_id``, asserts
  that the text is one token) and puts the i-th label, a string that must be
  one of ``--reward_tokens``, at the i-th placeholder. Train with
  ``--input_key input --label_key label --placeholder_token ки
  --reward_tokens + -``. The placeholder must be one token of the PRM's
  tokenizer, after a space too (Math-Shepherd and OpenRLHF's example use
  ``ки`` with Mistral-7B; byte-level BPE vocabularies such as SmolLM2's split
  it in two, so add it as a token there or pick another tag). A tree whose prompt or steps already contain the
  placeholder is an error: OpenRLHF would put a label there too.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

from mcts_pref import check
from mcts_pref.pair_rules import EPS_RULES, first_error, label_smoothing, pair_terminal, paper_choices, visits
from mcts_pref.errors import MctsPrefError
from mcts_pref.trees import chain_of, children_of, node_depths

REJECTED_RULES = ("lowest", "random")
PAIR_RULES = ("paper", "first-error")
FORMATS = ("dpo", "prm", "prm-openrlhf")
PLACEHOLDER = "ки"  # Math-Shepherd's step tag, the one OpenRLHF's train_prm example passes
PROBLEM_KEYS = ("question", "answer", "task", "source", "choices", "meta")  # what the step checker may read


# --- pairs --------------------------------------------------------------------


def problem_of(tree: dict) -> dict:
    """The problem record the tree was searched from, as far as the tree carries it (for the checker)."""
    problem = {"id": tree["problem_id"]}
    problem.update((k, tree[k]) for k in PROBLEM_KEYS if k in tree)
    return problem


def checked_clean(prefix_steps: list[str], chosen_steps: list[str], problem: dict) -> bool:
    """True unless the step checker finds a false claim in the prefix or the chosen steps.

    Each step is checked given the steps before it, so the chosen side's steps
    are read after the whole prefix.
    """
    return not check.has_false_step(prefix_steps + chosen_steps, problem)


def tree_pairs(
    tree: dict,
    rejected: str = "lowest",
    min_margin: float = 0.0,
    max_pairs: Optional[int] = None,
    seed: int = 0,
    *,
    rule: str = "paper",
    eps: str = "paper",
    min_visits: int = 0,
    checked: bool = False,
    dropped: Optional[Counter] = None,
) -> list[dict]:
    """Preference pairs of one tree, in path (depth) order.

    ``rule`` is ``--pairs`` (paper | first-error); ``rejected``,
    ``min_margin`` and ``seed`` apply to the paper rule. ``dropped``, if
    given, counts the pairs the ``min_visits`` and ``checked`` filters removed.
    """
    if rejected not in REJECTED_RULES:
        raise MctsPrefError(f"--rejected must be one of {', '.join(REJECTED_RULES)}, got {rejected!r}")
    if rule not in PAIR_RULES:
        raise MctsPrefError(f"--pairs must be one of {', '.join(PAIR_RULES)}, got {rule!r}")
    if eps not in EPS_RULES:
        raise MctsPrefError(f"--eps must be one of {', '.join(EPS_RULES)}, got {eps!r}")
    dropped = Counter() if dropped is None else dropped
    nodes = {n["id"]: n for n in tree["nodes"]}
    kids = children_of(tree["nodes"])
    depth = node_depths(tree["nodes"])
    # The committed steps down to each path node: the pair prompt, and the prefix --checked reads.
    steps_above = {node_id: [nodes[j]["text"] for j in tree["path"][: i + 1]] for i, node_id in enumerate(tree["path"])}
    if rule == "first-error":
        found = first_error(tree["path"], nodes, kids)
        choices = [] if found is None else [(nodes[found[0]]["parent"], nodes[found[1]], nodes[found[0]], found[2])]
    else:
        choices = paper_choices(tree, kids, rejected, min_margin, seed)
    problem = problem_of(tree)
    pairs = []
    for parent_id, chosen, worse, stats in choices:
        chosen_chain, rejected_chain = chain_of(chosen, kids), chain_of(worse, kids)
        chosen_text = "".join(n["text"] for n in chosen_chain)
        rejected_text = "".join(n["text"] for n in rejected_chain)
        if chosen_text == rejected_text:
            continue
        (q_cho, n_cho), (q_rej, n_rej) = stats[chosen["id"]], stats[worse["id"]]
        if min(visits(chosen, n_cho), visits(worse, n_rej)) < min_visits:
            dropped["min-visits"] += 1
            continue
        # The root's text (always "") is no step for the checker.
        if checked and not checked_clean(steps_above[parent_id][1:], [n["text"] for n in chosen_chain], problem):
            dropped["checked"] += 1
            continue
        pairs.append(
            {
                "v": 1,
                "prompt": tree["prompt"] + "".join(steps_above[parent_id]),
                "chosen": chosen_text,
                "rejected": rejected_text,
                "problem_id": tree["problem_id"],
                "depth": depth[chosen["id"]],
                "q_chosen": q_cho,
                "q_rejected": q_rej,
                "n_chosen": n_cho,
                "n_rejected": n_rej,
                "label_smoothing": label_smoothing(n_cho, n_rej, eps),
                "policy": tree["policy"],
                "chosen_terminal": pair_terminal(chosen_chain[-1]),
                "rejected_terminal": pair_terminal(rejected_chain[-1]),
            }
        )
    if max_pairs is not None and len(pairs) > max_pairs:
        # Keep the clearest preferences (largest Q margin), shallower first on ties.
        best = sorted(pairs, key=lambda p: (-(p["q_chosen"] - p["q_rejected"]), p["depth"]))[:max_pairs]
        pairs = sorted(best, key=lambda p: p["depth"])
    return pairs


# --- PRM step labels -------------------------------------------------------------


def step_labels(tree: dict) -> dict:
    """node id -> bool, the PRM label rule in the module docstring (root excluded)."""
    kids = children_of(tree["nodes"])
    depth = node_depths(tree["nodes"])
    reaches_correct: dict = {}
    # Deepest first, so every child is settled before its parent.
    for node in sorted(tree["nodes"], key=lambda n: -depth[n["id"]]):
        below = any(reaches_correct[c["id"]] for c in kids.get(node["id"], []))
        reaches_correct[node["id"]] = below or (bool(node.get("terminal")) and node.get("correct") is True)
    labels = {}
    for node in tree["nodes"]:
        if node["parent"] is None:
            continue
        if node.get("terminal") and isinstance(node.get("correct"), bool):
            labels[node["id"]] = node["correct"]
        else:
            labels[node["id"]] = reaches_correct[node["id"]] or (node["Q"] is not None and node["Q"] > 0)
    return labels


def prm_records(tree: dict) -> list[dict]:
    """One stepwise-supervision record per scored root-to-leaf path."""
    nodes = {n["id"]: n for n in tree["nodes"]}
    kids = children_of(tree["nodes"])
    labels = step_labels(tree)
    out = []
    for leaf in tree["nodes"]:
        if leaf["parent"] is None or leaf["id"] in kids or leaf["Q"] is None:
            continue
        chain = []
        node = leaf
        while node["parent"] is not None:
            chain.append(node)
            node = nodes[node["parent"]]
        chain.reverse()
        out.append(
            {
                "v": 1,
                "prompt": tree["prompt"],
                "completions": [n["text"].rstrip("\n") for n in chain],
                "labels": [labels[n["id"]] for n in chain],
                "problem_id": tree["problem_id"],
                "policy": tree["policy"],
            }
        )
    return out


def openrlhf_prm_record(rec: dict, placeholder: str = PLACEHOLDER) -> dict:
    """One stepwise record (:func:`prm_records`) in OpenRLHF's PRM layout (module docstring).

    Each step goes on its own line followed by a space and ``placeholder``;
    ``label`` holds ``"+"`` (good step) or ``"-"`` per step, in step order.
    """
    return {
        "v": 1,
        "input": rec["prompt"] + "\n".join(f"{step} {placeholder}" for step in rec["completions"]),
        "label": ["+" if ok else "-" for ok in rec["labels"]],
        "problem_id": rec["problem_id"],
        "policy": rec["policy"],
    }
