"""The experiment's tables, from its committed data files only.

    python3 experiments/tree_vs_alternatives/analyze.py experiments/tree_vs_alternatives [--readme]

Reads ``outcomes-*.jsonl`` and ``accounting.jsonl`` (written by collect.py)
and prints markdown: accuracy per arm, seed and round with generated tokens;
the pre-registered endpoints (each difference after round 2 per seed with its
paired sign test, then the seed as the unit: mean, t interval, sign test over
seeds, and a DerSimonian-Laird random-effects estimate); accuracy against
generated tokens. ``--readme`` rewrites the block between the
``<!-- analyze.py -->`` markers of the README in that folder.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from mcts_pref.stats import dersimonian_laird, paired_difference_ci, seed_summary, sign_test_p

ARMS = ("b", "b0", "c", "g", "g4")
# (A, B): the difference reported is A - B. The first is the primary endpoint.
ENDPOINTS = (("b", "c"), ("b", "g"), ("b", "g4"), ("b0", "c"), ("b", "b0"))
LAST = 2
START, END = "<!-- analyze.py -->", "<!-- /analyze.py -->"


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load(folder: Path):
    res: dict[tuple[str, int, int], dict[str, bool]] = defaultdict(dict)
    for f in sorted(folder.glob("outcomes-*.jsonl")):
        for r in jsonl(f):
            res[(r["arm"], r["seed"], r["round"])][r["problem_id"]] = r["correct"]
    acct = {(r["arm"], r["seed"], r["round"]): r for r in jsonl(folder / "accounting.jsonl")} \
        if (folder / "accounting.jsonl").exists() else {}
    return res, acct


def acc(x: dict[str, bool]) -> float:
    return sum(x.values()) / len(x)


def pct(x: float | None, signed: bool = False) -> str:
    return "-" if x is None else (f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}%")


def fmt_p(p: float) -> str:
    return f"{p:.2g}" if p < 0.01 else f"{p:.2f}"


def paired(a: dict[str, bool], b: dict[str, bool]) -> dict:
    """A - B on the problems both answered: difference, Wald CI, variance, discordant counts, sign test."""
    ids = sorted(set(a) & set(b))
    diffs = [(i, int(a[i]) - int(b[i])) for i in ids]
    mean, lo, hi = paired_difference_ci(diffs)
    only_a, only_b = sum(d == 1 for _, d in diffs), sum(d == -1 for _, d in diffs)
    n = len(ids)
    var = (only_a + only_b - (only_a - only_b) ** 2 / n) / n ** 2
    return {"n": n, "diff": mean, "ci": (lo, hi), "var": var, "only_a": only_a, "only_b": only_b,
            "p": float(sign_test_p(only_a, only_b))}


def tables(res, acct) -> str:
    seeds = sorted({s for (_, s, _) in res})
    out = ["| arm | seed | round 0 | round 1 | round 2 | generated tokens (r1 + r2) | tokens / b's | pairs / GRPO steps "
           "| train s |", "|---|---|---|---|---|---|---|---|---|"]
    for arm in ARMS:
        for s in seeds:
            if (arm, s, LAST) not in res:
                continue
            rows = [acct.get((arm, s, k), {}) for k in (1, 2)]
            toks = " + ".join(f"{r.get('generated_tokens', 0):,}" for r in rows)
            units = " + ".join(str(r.get("pairs" if arm not in ("g", "g4") else "train_steps") or "-") for r in rows)
            train = sum(r.get("train_s") or 0 for r in rows)
            # The realised compute match, round by round: c and g are budgeted at b's tokens (g4 at 4x).
            b_rows = [acct.get(("b", s, k), {}) for k in (1, 2)]
            ratio = " / ".join(f"{r.get('generated_tokens', 0) / br['generated_tokens']:.2f}"
                               if br.get("generated_tokens") else "-" for r, br in zip(rows, b_rows))
            out.append(f"| {arm} | {s} | {pct(acc(res[('base', s, 0)]))} | {pct(acc(res[(arm, s, 1)]))} | "
                       f"{pct(acc(res[(arm, s, LAST)]))} | {toks} | {ratio} | {units} | {train:.0f} |")
    out += ["", "| difference (round 2) | seed | n | A vs B | A - B (95% CI) | only A / only B right | p |",
            "|---|---|---|---|---|---|---|"]
    diff_header_end = len(out)
    summary = ["", "| difference (round 2) | seeds | mean over seeds (95% t CI) | seeds A > B / A < B | sign-test p "
               "| random effects (95% CI) | p | I² |", "|---|---|---|---|---|---|---|---|"]
    for a_arm, b_arm in ENDPOINTS:
        per_seed = []
        for s in seeds:
            if (a_arm, s, LAST) not in res or (b_arm, s, LAST) not in res:
                continue
            t = paired(res[(a_arm, s, LAST)], res[(b_arm, s, LAST)])
            per_seed.append(t)
            out.append(f"| {a_arm} - {b_arm} | {s} | {t['n']} | {pct(acc(res[(a_arm, s, LAST)]))} vs "
                       f"{pct(acc(res[(b_arm, s, LAST)]))} | {pct(t['diff'], True)} ({pct(t['ci'][0], True)} to "
                       f"{pct(t['ci'][1], True)}) | {t['only_a']} / {t['only_b']} | {fmt_p(t['p'])} |")
        if not per_seed:
            continue
        ss = seed_summary([t["diff"] for t in per_seed])
        ci = f"({pct(ss['ci'][0], True)} to {pct(ss['ci'][1], True)})" if ss["ci"] else ""
        re_ = dersimonian_laird([t["diff"] for t in per_seed], [t["var"] for t in per_seed])
        re_cells = (f"{pct(re_['estimate'], True)} ({pct(re_['ci'][0], True)} to {pct(re_['ci'][1], True)}) | "
                    f"{fmt_p(re_['p'])} | {100 * re_['i2']:.0f}%") if re_ else "- | - | -"
        summary.append(f"| {a_arm} - {b_arm} | {ss['n']} | {pct(ss['mean'], True)} {ci} | {ss['positive']} / "
                       f"{ss['negative']} | {fmt_p(ss['p'])} | {re_cells} |")
    curve = ["", "| arm | seeds | mean generated tokens after round 1 | accuracy | after round 2 | accuracy |",
             "|---|---|---|---|---|---|"]
    for arm in ARMS:
        ss = [s for s in seeds if (arm, s, LAST) in res]
        if not ss:
            continue
        t1 = sum(acct.get((arm, s, 1), {}).get("generated_tokens", 0) for s in ss) / len(ss)
        t2 = t1 + sum(acct.get((arm, s, 2), {}).get("generated_tokens", 0) for s in ss) / len(ss)
        a1 = sum(acc(res[(arm, s, 1)]) for s in ss) / len(ss)
        a2 = sum(acc(res[(arm, s, 2)]) for s in ss) / len(ss)
        curve.append(f"| {arm} | {', '.join(map(str, ss))} | {t1:,.0f} | {pct(a1)} | {t2:,.0f} | {pct(a2)} |")
    if len(out) == diff_header_end:  # no pair of arms finished on a common seed yet
        out, summary = out[:-3], []
    return "\n".join(out + summary + curve) + "\n"


def main() -> None:
    folder = Path(sys.argv[1])
    text = tables(*load(folder))
    if "--readme" in sys.argv[2:]:
        readme = folder / "README.md"
        src = readme.read_text()
        if START not in src or END not in src:
            sys.exit(f"{readme}: no {START} ... {END} block to fill")
        head, rest = src.split(START, 1)
        readme.write_text(head + START + "\n" + text + END + rest.split(END, 1)[1])
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
