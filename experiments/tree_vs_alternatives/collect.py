"""Turn finished arm runs into the experiment's committed data files.

    python3 experiments/tree_vs_alternatives/collect.py RUNS_DIR OUT_DIR

Reads RUNS_DIR/tva-<arm>-s<seed>/ for every arm whose last round is evaluated
and writes, in OUT_DIR:

- ``outcomes-<arm>.jsonl``: one row per seed, round and test problem:
  ``arm``, ``seed``, ``round``, ``problem_id``, ``correct``, ``n_tokens`` (the
  greedy test solution's length). Round 0 (the shared base policy) is written
  once, as arm ``base``, in ``outcomes-base.jsonl``.
- ``accounting.jsonl``: one row per arm, seed and training round: every
  generated token by kind (search expansions, rollouts, instance sampling,
  GRPO completions), self-evaluation prefill tokens, pairs, training steps,
  search and training wall seconds.

Arms that have not finished are left out; rerun when they have.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROUNDS = 2


def jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def outcomes(run: Path, arm: str, seed: int, rnd: int) -> list[dict]:
    rows, seen = [], set()
    for r in jsonl(run / f"round-{rnd}" / "scored.jsonl"):
        pid = str(r["problem_id"])
        if pid in seen:
            continue
        seen.add(pid)
        rows.append({"arm": arm, "seed": seed, "round": rnd, "problem_id": pid, "correct": bool(r["correct"]),
                     "n_tokens": r.get("n_tokens")})
    return rows


def accounting(run: Path, arm: str, seed: int, rnd: int) -> dict:
    r = run / f"round-{rnd}"
    row = {"arm": arm, "seed": seed, "round": rnd, "expand_tokens": 0, "rollout_tokens": 0, "sample_tokens": 0,
           "grpo_tokens": 0, "self_eval_prefill_tokens": 0, "pairs": None, "train_steps": None, "search_s": None,
           "train_s": None}
    trees = jsonl(r / "trees.jsonl")
    if trees:
        row["expand_tokens"] = sum(t["stats"].get("expand_tokens", t["stats"]["tokens"]) for t in trees)
        row["rollout_tokens"] = sum(t["stats"].get("rollout_tokens", 0) for t in trees)
        row["self_eval_prefill_tokens"] = sum(t["stats"].get("self_eval_prefill_tokens", 0) for t in trees)
        row["search_s"] = round(sum(t["stats"].get("wall_share_s") or 0 for t in trees), 1)
        row["trees"] = len(trees)
        row["trees_correct"] = sum(bool(t.get("correct")) for t in trees)
        row["committed_steps"] = round(sum(len(t["path"]) - 1 for t in trees) / len(trees), 3)
    samples = jsonl(r / "train_samples.jsonl")
    if samples:
        row["sample_tokens"] = sum(s["n_tokens"] for s in samples)
        row["k"] = int((r / "k").read_text()) if (r / "k").exists() else None
    if (r / "pairs.jsonl").exists():
        row["pairs"] = len(jsonl(r / "pairs.jsonl"))
    tc = r / "adapter" / "train_config.json"
    if tc.exists():
        cfg = json.loads(tc.read_text())
        row["train_steps"], row["train_s"] = cfg.get("steps"), cfg.get("seconds")
    if (r / "grpo.json").exists():
        g = json.loads((r / "grpo.json").read_text())
        row.update(grpo_tokens=g["generated_tokens"], train_steps=g["steps"], train_s=g["train_s"], lr=g["lr"],
                   budget_tokens=g["budget_tokens"], completions=g["completions"], reward_mean=g["reward_mean"])
    row["generated_tokens"] = row["expand_tokens"] + row["rollout_tokens"] + row["sample_tokens"] + row["grpo_tokens"]
    return row


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))


def main() -> None:
    runs, out = Path(sys.argv[1]), Path(sys.argv[2])
    by_arm: dict[str, list[dict]] = {}
    base: dict[int, list[dict]] = {}
    acct = []
    for run in sorted(runs.glob("tva-*-s*")):
        m = re.fullmatch(r"tva-(\w+)-s(\d+)", run.name)
        if not m or not (run / f"round-{ROUNDS}" / "report.json").exists():
            continue
        arm, seed = m.group(1), int(m.group(2))
        if seed not in base or arm == "b":
            base[seed] = outcomes(run, "base", seed, 0)
        for k in range(1, ROUNDS + 1):
            by_arm.setdefault(arm, []).extend(outcomes(run, arm, seed, k))
            acct.append(accounting(run, arm, seed, k))
    for arm, rows in by_arm.items():
        write(out / f"outcomes-{arm}.jsonl", sorted(rows, key=lambda r: (r["seed"], r["round"], r["problem_id"])))
    write(out / "outcomes-base.jsonl", [r for s in sorted(base) for r in sorted(base[s], key=lambda r: r["problem_id"])])
    write(out / "accounting.jsonl", sorted(acct, key=lambda r: (r["arm"], r["seed"], r["round"])))
    done = sorted({(r["arm"], r["seed"]) for r in acct})
    print(f"collected {len(done)} arm-seeds: {', '.join(f'{a}-s{s}' for a, s in done)} -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
