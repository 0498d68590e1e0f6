"""Summarise experiments/step_vs_instance: per arm and seed, and the pooled head-to-heads.

    python3 experiments/step_vs_instance/analyze.py runs experiments/step_vs_instance/results.json

Reads runs/svi-<arm>-s<seed>/ as run.sh leaves them. For each arm and seed:
held-out accuracy of the last round (n), data tokens (every token the arm
generated to make training data: search expansions + rollouts, or sampling),
value tokens (rollouts; self-evaluation prefill is reported apart), wall
seconds per round (from the times the round's files were written: data,
training and the held-out evaluation; the machine may have been shared),
pairs, and committed steps per solution.
Then b vs c, b vs d, d vs c and b vs a, pooled over seeds with the stratified
exact sign test and a problem-clustered 95% CI (mcts_pref.stats.paired_test),
and each seed alone (per_seed). Prints both as the README's markdown tables.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from mcts_pref.stats import paired_test


def jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def correctness(path: Path) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for r in jsonl(path):
        out.setdefault(str(r["problem_id"]), bool(r["correct"]))
    return out


def arm_row(run: Path, rounds: int) -> dict:
    last = run / f"round-{rounds}"
    scored = correctness(last / "scored.jsonl")
    data = value = prefill = pairs = 0
    steps = []
    for k in range(1, rounds + 1):
        r = run / f"round-{k}"
        trees = jsonl(r / "trees.jsonl")
        for t in trees:
            data += t["stats"]["tokens"]
            value += t["stats"].get("rollout_tokens", 0)
            prefill += t["stats"].get("self_eval_prefill_tokens", 0)
            steps.append(len(t["path"]) - 1)
        for s in jsonl(r / "train_samples.jsonl"):
            data += s["n_tokens"]
        pairs += len(jsonl(r / "pairs.jsonl"))
    # Trees are searched many at a time, so their own wall_s overlap; the rounds' file times do not.
    done = [run / f"round-{k}" / "report.json" for k in range(rounds + 1)]
    walls = [b.stat().st_mtime - a.stat().st_mtime for a, b in zip(done, done[1:]) if a.exists() and b.exists()]
    base = correctness(run / "round-0" / "scored.jsonl")
    return {
        "accuracy": sum(scored.values()) / len(scored) if scored else None, "n": len(scored),
        "base_accuracy": sum(base.values()) / len(base) if base else None,
        "data_tokens": data, "value_tokens": value, "self_eval_prefill_tokens": prefill,
        "round_wall_s": [round(w) for w in walls], "pairs": pairs,
        "committed_steps_per_tree": sum(steps) / len(steps) if steps else None,
    }


def main(runs: Path, out: Path, rounds: int = 2) -> None:
    arms: dict[str, dict[int, Path]] = {}
    for d in sorted(runs.glob("svi-*-s*")):
        m = re.fullmatch(r"svi-([a-z])-s(\d+)", d.name)
        if m and (d / f"round-{rounds}" / "scored.jsonl").exists():
            arms.setdefault(m.group(1), {})[int(m.group(2))] = d
    result = {"per_arm_seed": {a: {s: arm_row(d, rounds) for s, d in sorted(seeds.items())}
                               for a, seeds in sorted(arms.items())}, "head_to_head": {}}
    result["per_seed"] = {}
    for one, other in (("b", "c"), ("b", "d"), ("d", "c"), ("b", "a")):
        seeds = sorted(set(arms.get(one, {})) & set(arms.get(other, {})))
        if not seeds:
            continue
        strata = [(correctness(arms[other][s] / f"round-{rounds}" / "scored.jsonl"),
                   correctness(arms[one][s] / f"round-{rounds}" / "scored.jsonl")) for s in seeds]
        key = f"{one}_vs_{other}"
        result["head_to_head"][key] = {"seeds": seeds, **paired_test(strata)}
        result["per_seed"][key] = {s: paired_test([st]) for s, st in zip(seeds, strata)}
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))


def markdown(result: dict) -> str:
    """The README's tables: last-round accuracy per arm and seed, then the head-to-heads."""
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"
    lines = ["| arm | seed | round 0 | last round | n | data tokens | pairs | committed steps / tree |",
             "|---|---|---|---|---|---|---|---|"]
    for arm, seeds in result["per_arm_seed"].items():
        for seed, r in seeds.items():
            steps = "-" if r["committed_steps_per_tree"] is None else f"{r['committed_steps_per_tree']:.2f}"
            lines.append(f"| {arm} | {seed} | {pct(r['base_accuracy'])} | {pct(r['accuracy'])} | {r['n']} "
                         f"| {r['data_tokens']:,} | {r['pairs']} | {steps} |")
    lines += ["", "| comparison | seeds | n | accuracy | difference (95% CI) | only B / only A right | p |",
              "|---|---|---|---|---|---|---|"]
    for key, h in result["head_to_head"].items():
        b, a = key.split("_vs_")
        rows = [(", ".join(map(str, h["seeds"])) + " pooled", h)] if len(h["seeds"]) > 1 else []
        rows = [(str(s), x) for s, x in result["per_seed"][key].items()] + rows
        for label, x in rows:
            lo, hi = x["ci95"]
            lines.append(f"| {b} vs {a} | {label} | {x['n']} | {pct(x['acc_b'])} vs {pct(x['acc_a'])} "
                         f"| {100 * x['diff']:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f}) | {x['fixed']} / {x['broken']} "
                         f"| {x['p']:.2g} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
