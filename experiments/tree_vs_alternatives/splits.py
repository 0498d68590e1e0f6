"""Training draws, disjoint test sets and a validation split for every seed.

    python3 experiments/tree_vs_alternatives/splits.py OUT_DIR [--seeds 0 1 2 3 4 5]

Writes OUT_DIR/s<S>/train.jsonl (the loop's own draw: generator seed S * 1000003,
N_TRAIN x ROUNDS problems), OUT_DIR/s<S>/test.jsonl, OUT_DIR/validation.jsonl and
OUT_DIR/tune_train.jsonl (training problems for GRPO's learning-rate search).

Three one-digit chain sums have only 4,000 distinct questions, so draws collide.
Test sets are made disjoint by question text: seed S's test set keeps, in draw
order, the first N_TEST questions of generator seed 500000 + S * 1000003 that are
in no seed's training draw, in no earlier seed's test set and not repeated.
The validation split (generator seed 9000000, used only to choose GRPO's
learning rate) avoids every test set; so do the 64 tuning problems (generator
seed 100 * 1000003). Deterministic: rerunning gives the same files.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

TASK = "gym:chain_sum"
CONFIG = ["--config", "min_terms=3", "--config", "max_terms=3", "--config", "min_digits=1", "--config", "max_digits=1"]


def draw(seed: int, size: int, tmp: Path) -> list[dict]:
    subprocess.run(["mcts-pref", "prepare", TASK, "--size", str(size), "--seed", str(seed), *CONFIG, "--out", str(tmp)],
                   check=True, stderr=subprocess.DEVNULL)
    rows = read(tmp)
    tmp.unlink()
    return rows


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def take(rows: list[dict], banned: set[str], n: int, what: str) -> list[dict]:
    out = []
    for r in rows:
        if r["question"] in banned:
            continue
        banned.add(r["question"])
        out.append(r)
        if len(out) == n:
            return out
    sys.exit(f"{what}: only {len(out)} fresh questions in the draw; draw more")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    ap.add_argument("--n-train", type=int, default=128, help="N_TRAIN x ROUNDS of the loop")
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--n-validation", type=int, default=100)
    a = ap.parse_args()
    tmp = a.out / "draw.tmp.jsonl"
    a.out.mkdir(parents=True, exist_ok=True)
    trains = {s: draw(s * 1000003, a.n_train, tmp) for s in a.seeds}
    banned = {r["question"] for rows in trains.values() for r in rows}
    banned |= {r["question"] for r in draw(424242, 2, tmp)}  # the few-shot exemplars (arm.sh)
    for s in a.seeds:
        write(a.out / f"s{s}" / "train.jsonl", trains[s])
        test = take(draw(500000 + s * 1000003, 4 * a.n_test, tmp), banned, a.n_test, f"seed {s} test")
        write(a.out / f"s{s}" / "test.jsonl", test)
    val = take(draw(9000000, 4 * a.n_validation, tmp), banned, a.n_validation, "validation")
    write(a.out / "validation.jsonl", val)
    # GRPO's learning-rate search trains on these (seed 100's draw less every test and validation question).
    test_or_val = {r["question"] for s in a.seeds for r in read(a.out / f"s{s}" / "test.jsonl")} | {r["question"] for r in val}
    write(a.out / "tune_train.jsonl", take(draw(100 * 1000003, 2 * a.n_train, tmp), test_or_val, a.n_train // 2, "tune"))
    print(f"splits: seeds {a.seeds}, {a.n_train} train, {a.n_test} test each (disjoint), "
          f"{a.n_validation} validation -> {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
