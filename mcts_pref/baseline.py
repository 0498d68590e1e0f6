"""`instance-pairs`: the plain baseline, whole-solution pairs from scored samples.

For each problem with at least one correct and one wrong sampled solution,
chosen = a correct completion and rejected = a wrong one, both continuing the
same prompt. This is the instance-level DPO the step-level method must beat.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Annotated

import typer

from mcts_pref import options as O
from mcts_pref.console import console, stage
from mcts_pref.records import MctsPrefError, RecordWriter, read_many


def instance_pairs(samples: list[dict], per_problem: int = 1, seed: int = 0) -> list[dict]:
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        if "correct" not in s:
            raise MctsPrefError(f"sample of problem {s['problem_id']!r} has no 'correct': run `mcts-pref evaluate` first")
        by_problem[str(s["problem_id"])].append(s)
    pairs = []
    for pid in sorted(by_problem):
        group = by_problem[pid]
        good = [s for s in group if s["correct"]]
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
    seed: O.Seed = 0,
    out: O.Out = None,
) -> None:
    """Instance-level pairs (correct vs wrong whole solution) from scored samples: the DPO baseline."""
    recs = read_many(samples, "sample")
    pairs = instance_pairs(recs, per_problem=per_problem, seed=seed)
    with RecordWriter(out) as w:
        w.write_many(pairs)
    n_problems = len({r["problem_id"] for r in recs})
    console.print(f"instance-pairs: {len(pairs)} pairs from {n_problems} problems")
