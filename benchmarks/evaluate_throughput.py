"""Throughput of `evaluate` scoring: numeric fast path and symbolic path.

Plain script, no model: builds ~20k synthetic GSM8K-style completions (right,
wrong and unparsable answers in several formats) plus a few hundred LaTeX
ones, then times ``score_samples`` on each set on one core.

    python benchmarks/evaluate_throughput.py [--numeric 20000] [--symbolic 300]

Target (DESIGN / tasks brief): numeric >= 2,000 scored answers/s.
"""

from __future__ import annotations

import argparse
import random
import time

from mcts_pref.scoring import score_samples, summarize

# Filler reasoning so extraction scans realistic text, not just one line.
REASONING = (
    "Natalia sold 48 clips in April and half as many in May, so 48 / 2 = 24 clips.\n"
    "Altogether she sold 48 + 24 = 72 clips in April and May.\n"
)
NUMERIC_FORMATS = (
    "The answer is {a}.",
    "The final answer is ${a}.",
    "#### {a}",
    "So the total is \\boxed{{{a}}}.",
    "In the end she has {a} dollars left.",
    "I am not sure what to do next.",  # unparsable
)
# (gold, pred) templates; {k} varies per sample so math-verify's small parse
# cache cannot flatter the numbers. Equal and unequal pairs.
SYMBOLIC = (
    ("\\frac{{1}}{{{k}}}", "\\frac{{2}}{{{k2}}}"),
    ("\\sqrt{{{k}}}", "\\sqrt{{{k}}} \\cdot 1"),
    ("x^2+{k}", "{k}+x^2"),
    ("[{k},{k2})", "[{k},{k2}]"),
    ("{k}\\pi", "\\pi \\cdot {k}"),
    ("\\frac{{3}}{{{k}}}", "\\sqrt{{{k}}}"),
)


def numeric_samples(n: int, rng: random.Random) -> list[dict]:
    out = []
    for i in range(n):
        gold = rng.randint(0, 100_000)
        value = gold if rng.random() < 0.6 else gold + rng.randint(1, 9)
        text = f"{value:,}" if rng.random() < 0.2 else str(value)
        fmt = rng.choice(NUMERIC_FORMATS)
        out.append({"problem_id": f"n{i // 4}", "completion": REASONING + fmt.format(a=text), "answer": str(gold)})
    return out


def symbolic_samples(n: int) -> list[dict]:
    out = []
    for i in range(n):
        gold, pred = SYMBOLIC[i % len(SYMBOLIC)]
        k = {"k": i + 2, "k2": 2 * i + 4}
        out.append({"problem_id": f"s{i}", "completion": f"Thus the answer is $\\boxed{{{pred.format(**k)}}}$.",
                    "answer": gold.format(**k)})
    return out


def timed(label: str, samples: list[dict]) -> float:
    start = time.perf_counter()
    scored = score_samples(samples)
    elapsed = time.perf_counter() - start
    s = summarize(scored)
    rate = len(samples) / elapsed
    print(f"{label:>9}: {len(samples):6d} answers in {elapsed:6.2f} s = {rate:8.0f} answers/s "
          f"(accuracy {s['accuracy']:.3f}, no answer {s['no_answer']}, timeouts {s['timeouts']})")
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--numeric", type=int, default=20_000)
    ap.add_argument("--symbolic", type=int, default=300)
    args = ap.parse_args()
    rng = random.Random(0)
    rate = timed("numeric", numeric_samples(args.numeric, rng))
    print(f"numeric target >= 2000 answers/s: {'ok' if rate >= 2000 else 'MISSED'}")
    if args.symbolic:
        from mcts_pref.tasks.verify import worker

        start = time.perf_counter()
        worker().equal("1", "1")  # start-up is a one-off; time the steady state
        print(f"   worker: started in {time.perf_counter() - start:.2f} s")
        timed("symbolic", symbolic_samples(args.symbolic))


if __name__ == "__main__":
    main()
