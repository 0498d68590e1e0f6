"""`extract-pairs`: read search trees, write preference pairs or PRM step labels (no model).

The rules (which pairs, label smoothing, the PRM label rule and layouts) are
in ``pairs.py``; this module is the command: options, reading and checking
every tree file first, and the summary table.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from mcts_pref.console import console, stage
from mcts_pref.errors import MctsPrefError, RecordError
from mcts_pref.options import OutReplaced
from mcts_pref.pair_rules import EPS_RULES
from mcts_pref.pairs import (
    FORMATS, PAIR_RULES, PLACEHOLDER, REJECTED_RULES, openrlhf_prm_record, prm_records, tree_pairs,
)
from mcts_pref.records import RecordWriter
from mcts_pref.trees import is_correct, iter_trees


def read_trees(paths: list[str], need_correct: bool = False, placeholder: Optional[str] = None) -> list[dict]:
    """Read and check every tree file before anything is written.

    With ``placeholder`` (prm-openrlhf), a tree whose prompt or step text holds
    it is an error: OpenRLHF would put a label on that occurrence too.
    """
    trees = []
    for path in paths:
        for shown, line, tree in iter_trees(path, need_correct):
            if placeholder is not None:
                where = "its prompt" if placeholder in tree["prompt"] else next(
                    (f"node {n['id']}'s text" for n in tree["nodes"] if placeholder in n["text"]), None)
                if where is not None:
                    raise RecordError(shown, line, f"tree {tree['problem_id']!r}: {where} contains the placeholder "
                                                   f"{placeholder!r}; pick another with --placeholder")
            trees.append(tree)
    return trees


def summary_table(n_read: int, n_kept: int, pairs: list[dict], n_prm: Optional[int], dropped: Counter) -> Table:
    table = Table(title="extract-pairs", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("trees read", str(n_read))
    table.add_row("trees kept", str(n_kept))
    table.add_row("pairs", str(len(pairs)))
    for name in ("min-visits", "checked"):
        if name in dropped:
            table.add_row(f"dropped by --{name}", str(dropped[name]))
    per_depth = Counter(p["depth"] for p in pairs)
    table.add_row("pairs per depth", ", ".join(f"{d}: {per_depth[d]}" for d in sorted(per_depth)) or "-")
    if pairs:
        margin = sum(p["q_chosen"] - p["q_rejected"] for p in pairs) / len(pairs)
        eps = sum(p["label_smoothing"] for p in pairs) / len(pairs)
        table.add_row("mean Q margin", f"{margin:.4f}")
        table.add_row("mean label smoothing", f"{eps:.4f}")
    if n_prm is not None:
        table.add_row("PRM records", str(n_prm))
    return table


@dataclass
class PairsConfig:
    """The knobs of `extract-pairs`; its options take their defaults from here.

    rule (str, "paper"): paper (highest- vs lowest-Q child at each committed step) | first-error.
    rejected (str, "lowest"): the rejected candidate of paper pairs: lowest | random.
    min_margin (float, 0.0): keep a paper pair only if q_chosen - q_rejected is above this.
    min_visits (int, 0): both sides visited at least this often (commit-time N plus rollouts).
    checked (bool, False): drop a pair whose chosen side or shared prefix holds a false claim.
    eps_rule (str, "paper"): label smoothing from visits: paper | add-one.
    only_correct (bool | None, None): only trees whose committed path is correct; None: yes for
        paper pairs (the paper's filter), no for first-error pairs.
    max_pairs (int | None, None): at most this many pairs per tree (largest Q margin first).
    seed (int, 0): seed of --rejected random.
    fmt (str, "dpo"): dpo (preference pairs) | prm (TRL <= 1.13 stepwise supervision) |
        prm-openrlhf (OpenRLHF's PRM dataset: input with a placeholder after each step, one label per step).
    placeholder (str, "ки"): prm-openrlhf's step tag; one token of the PRM's tokenizer (OpenRLHF's
        --placeholder_token).
    """

    rule: str = "paper"
    rejected: str = "lowest"
    min_margin: float = 0.0
    min_visits: int = 0
    checked: bool = False
    eps_rule: str = "paper"
    only_correct: Optional[bool] = None
    max_pairs: Optional[int] = None
    seed: int = 0
    fmt: str = "dpo"
    placeholder: str = PLACEHOLDER

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise MctsPrefError(f"--format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if not self.placeholder.strip() or self.placeholder != self.placeholder.strip():
            raise MctsPrefError(f"--placeholder must be a tag without surrounding whitespace, got {self.placeholder!r}")
        if self.rejected not in REJECTED_RULES:
            raise MctsPrefError(f"--rejected must be one of {', '.join(REJECTED_RULES)}, got {self.rejected!r}")
        if self.rule not in PAIR_RULES:
            raise MctsPrefError(f"--pairs must be one of {', '.join(PAIR_RULES)}, got {self.rule!r}")
        if self.rule == "first-error" and self.rejected != "lowest":
            raise MctsPrefError("--rejected applies to --pairs paper; first-error pairs reject the first wrong step")
        if self.eps_rule not in EPS_RULES:
            raise MctsPrefError(f"--eps must be one of {', '.join(EPS_RULES)}, got {self.eps_rule!r}")
        if self.min_visits < 0:
            raise MctsPrefError(f"--min-visits must be >= 0, got {self.min_visits}")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise MctsPrefError("--max-pairs-per-tree must be >= 1")
        if self.only_correct is None:
            # A wrong tree's first error is exactly what first-error pairs are for.
            self.only_correct = self.rule == "paper"


# The declared defaults (PairsConfig() itself would resolve only_correct).
_D = {f.name: f.default for f in fields(PairsConfig)}


@stage
def command(
    trees: Annotated[list[str], typer.Argument(help="Tree JSONL files written by search (- for stdin).", show_default=False)],
    out: OutReplaced = None,
    rule: Annotated[
        str,
        typer.Option(
            "--pairs",
            help="Which pairs: paper (at each committed step, highest- vs lowest-Q child) | first-error "
            "(one per tree: the first committed step judged wrong vs its best sibling judged good; all trees unless --only-correct-trees).",
        ),
    ] = _D["rule"],
    rejected: Annotated[
        str, typer.Option("--rejected", help="Rejected candidate (paper pairs): lowest (lowest Q) | random (a seeded random other child).")
    ] = _D["rejected"],
    min_margin: Annotated[
        float, typer.Option("--min-margin", help="Keep a paper pair only if q_chosen - q_rejected is above this.")
    ] = _D["min_margin"],
    min_visits: Annotated[
        int,
        typer.Option("--min-visits", help="Keep a pair only if both sides were visited at least this often (commit-time N plus rollouts)."),
    ] = _D["min_visits"],
    checked: Annotated[
        bool,
        typer.Option("--checked", help="Drop a pair whose chosen side or shared prefix holds a claim the step checker finds false."),
    ] = _D["checked"],
    eps_rule: Annotated[
        str,
        typer.Option(
            "--eps",
            help="Label smoothing from visits: paper = min(N_rej/(N_cho+N_rej), 0.5) | "
            "add-one = min((N_rej+1)/(N_cho+N_rej+2), 0.5).",
        ),
    ] = _D["eps_rule"],
    only_correct: Annotated[
        Optional[bool],
        typer.Option(
            "--only-correct-trees/--all-trees",
            help="Use only trees whose committed path is correct. Default: only correct trees for paper pairs "
            "(the paper's filter), all trees for first-error pairs.",
            show_default=False,
        ),
    ] = _D["only_correct"],
    max_pairs: Annotated[
        Optional[int], typer.Option("--max-pairs-per-tree", help="Keep at most this many pairs per tree (largest Q margin first).")
    ] = _D["max_pairs"],
    seed: Annotated[int, typer.Option("--seed", help="Seed for --rejected random.")] = _D["seed"],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="dpo (preference pairs, TRL DPOTrainer) | prm (step labels as TRL <= 1.13 stepwise supervision: "
            "prompt, completions, labels) | prm-openrlhf (OpenRLHF's PRM dataset: 'input' with --placeholder after "
            "each step, 'label' one +/- per step; train_prm --input_key input --label_key label "
            "--placeholder_token TAG --reward_tokens + -).",
        ),
    ] = _D["fmt"],
    placeholder: Annotated[
        str,
        typer.Option("--placeholder", help="prm-openrlhf: the step tag after each step; must be one token of the "
                     "PRM's tokenizer (pass it as --placeholder_token)."),
    ] = _D["placeholder"],
    prm_out: Annotated[Optional[str], typer.Option(
        "--prm-out", help="Also write PRM step labels (TRL <= 1.13 stepwise supervision) to this file.")] = None,
) -> None:
    """Extract step-level preference pairs (TRL DPO format) from search trees.

    Along each committed path, the highest-Q and lowest-Q children of a node
    form a pair, compared with the statistics they had when their parent
    committed; prompt = the problem prompt plus the shared steps so far.
    --pairs first-error instead pairs each tree's first wrong step with a
    sibling judged good. --format prm / prm-openrlhf write step labels for a
    process reward model instead, one record per root-to-leaf path. A summary
    table goes to stderr.
    """
    cfg = PairsConfig(rule=rule, rejected=rejected, min_margin=min_margin, min_visits=min_visits, checked=checked,
                      eps_rule=eps_rule, only_correct=only_correct, max_pairs=max_pairs, seed=seed, fmt=fmt,
                      placeholder=placeholder)
    if cfg.fmt != "dpo" and prm_out:
        raise MctsPrefError(f"--prm-out adds PRM records next to DPO pairs; with --format {cfg.fmt} they already go to --out")
    if prm_out and out and Path(prm_out).resolve() == Path(out).resolve():
        raise MctsPrefError("--prm-out and --out must be different files")

    all_trees = read_trees(trees, need_correct=cfg.only_correct,
                           placeholder=cfg.placeholder if cfg.fmt == "prm-openrlhf" else None)
    kept = [t for t in all_trees if not cfg.only_correct or is_correct(t)]
    dropped: Counter = Counter()
    pairs = []
    if cfg.fmt == "dpo":
        for t in kept:
            pairs += tree_pairs(
                t, cfg.rejected, cfg.min_margin, cfg.max_pairs, cfg.seed, rule=cfg.rule, eps=cfg.eps_rule,
                min_visits=cfg.min_visits, checked=cfg.checked, dropped=dropped,
            )
    prm = [r for t in kept for r in prm_records(t)] if (cfg.fmt != "dpo" or prm_out) else None

    with RecordWriter(out) as writer:
        if cfg.fmt == "dpo":
            writer.write_many(pairs)
        elif cfg.fmt == "prm":
            writer.write_many(prm)
        else:
            writer.write_many(openrlhf_prm_record(r, cfg.placeholder) for r in prm)
    if prm_out:
        with RecordWriter(prm_out) as prm_writer:
            prm_writer.write_many(prm)
    console.print(summary_table(len(all_trees), len(kept), pairs, None if prm is None else len(prm), dropped))
