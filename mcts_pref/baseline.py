"""`instance-pairs`: the plain baseline, whole-solution pairs from scored samples.

For each problem with at least one correct and one wrong sampled solution,
chosen = a correct completion and rejected = a wrong one, both continuing the
same prompt. This is the instance-level DPO the step-level method must beat.
With ``--checked`` a correct completion can be chosen only if the step
checker finds no false claim in it (a right answer reached through false
arithmetic is not a good example): the baseline then gets the same label
cleaning as ``extract-pairs --checked``, so a step-level win is not just
cleaner labels.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Annotated

import typer

from mcts_pref import options as O
from mcts_pref import check
from mcts_pref.console import console, stage
from mcts_pref.errors import MctsPrefError
from mcts_pref.records import RecordWriter, iter_records, validate
from mcts_pref.steps import split_steps
from mcts_pref.tasks import resolve_task


def has_false_step(sample: dict) -> bool:
    """Does the step checker find a false claim in the sample's completion? (The sample serves as the problem.)"""
    steps = sample.get("steps") or split_steps(sample["completion"], resolve_task(sample.get("task")))
    return check.has_false_step(steps, sample)


def instance_pairs(samples: list[dict], per_problem: int = 1, seed: int = 0, checked: bool = False) -> list[dict]:
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        validate(s, "scored", f"sample of problem {s['problem_id']!r}")
        by_problem[str(s["problem_id"])].append(s)
    pairs = []
    for pid in sorted(by_problem):
        group = by_problem[pid]
        good = [s for s in group if s["correct"] and not (checked and has_false_step(s))]
        # Distinct texts only: a pair of identical completions teaches nothing.
        bad = list({s["completion"]: s for s in group if not s["correct"]}.values())
        good = list({s["completion"]: s for s in good}.values())
        rng = random.Random(f"{seed}:{pid}")
        rng.shuffle(good)
        rng.shuffle(bad)
        for w, l in list(zip(good, bad))[:per_problem]:
            pairs.append({
                "prompt": w["prompt"], "chosen": w["completion"], "rejected": l["completion"], "problem_id": pid,
                "depth": 0, "label_smoothing": 0.0, "policy": w.get("policy"), "chosen_terminal": True,
                "rejected_terminal": True,
            })
    return pairs


@stage
def command(
    samples: Annotated[list[str], typer.Argument(help="Scored sample JSONL files (from `evaluate`).")],
    per_problem: Annotated[int, typer.Option("--per-problem", help="Most pairs per problem.")] = 1,
    checked: Annotated[bool, typer.Option("--checked", help="Choose only correct completions in which the step "
                                          "checker finds no false claim.")] = False,
    seed: O.Seed = 0,
    out: O.OutReplaced = None,
) -> None:
    """Instance-level pairs (correct vs wrong whole solution) from scored samples: the DPO baseline."""
    recs = []
    for path in samples:
        for line, rec in iter_records(path, "sample"):
            validate(rec, "scored", path, line)
            recs.append(rec)
    pairs = instance_pairs(recs, per_problem=per_problem, seed=seed, checked=checked)
    with RecordWriter(out) as w:
        w.write_many(pairs)
    n_problems = len({r["problem_id"] for r in recs})
    console.print(f"instance-pairs: {len(pairs)} pairs from {n_problems} problems")
