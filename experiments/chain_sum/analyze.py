"""Paired comparison of every stage of a run against round 0 on the same held-out problems.

    python experiments/chain_sum/analyze.py runs/chain_sum_exp > experiments/chain_sum/results.md

For each stage: accuracy with its Wilson 95% CI, problems fixed / broken
relative to the base policy (same greedy prompts), an exact two-sided
McNemar (sign) test p-value on the discordant problems, and the compute that
produced its training data (generated tokens) and the adapter (seconds).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mcts_pref.stats import sign_test_p, wilson_interval


def scored(path: Path) -> dict[str, bool]:
    return {r["problem_id"]: bool(r["correct"]) for r in map(json.loads, path.read_text().split("\n")[:-1])}


def tokens(path: Path, key: str) -> int:
    if not path.exists():
        return 0
    rows = [json.loads(line) for line in path.read_text().split("\n") if line.strip()]
    return sum(int(r["stats"]["tokens"]) if key == "tree" else int(r.get("n_tokens", 0)) for r in rows)


def main(run: Path) -> None:
    base = scored(run / "round-0" / "scored.jsonl")
    stages = sorted(p for p in run.iterdir() if p.is_dir() and (p / "scored.jsonl").exists())
    print("| stage | accuracy | 95% CI | fixed | broken | p (sign test) | data tokens | pairs | train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for d in stages:
        s = scored(d / "scored.jsonl")
        n, c = len(s), sum(s.values())
        lo, hi = wilson_interval(c, n)
        fixed = sum(1 for k, v in s.items() if v and not base.get(k, False))
        broken = sum(1 for k, v in s.items() if not v and base.get(k, False))
        data = tokens(d / "trees.jsonl", "tree") + tokens(d / "train_samples.jsonl", "sample")
        pairs = sum(1 for line in (d / "pairs.jsonl").read_text().split("\n") if line.strip()) if (d / "pairs.jsonl").exists() else 0
        metrics = d / "adapter" / "metrics.jsonl"
        secs = sum(json.loads(line)["seconds"] for line in metrics.read_text().split("\n") if line.strip()) if metrics.exists() else 0
        p = "-" if d.name == "round-0" else f"{float(sign_test_p(fixed, broken)):.3g}"
        print(f"| {d.name} | {c}/{n} = {100 * c / n:.1f}% | {100 * lo:.1f}-{100 * hi:.1f} | {fixed} | {broken} | {p} "
              f"| {data:,} | {pairs} | {secs:.0f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
