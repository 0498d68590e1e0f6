"""Paired tests for per-problem correctness: the statistics `report` prints.

Two policies answer the same held-out problems. On the problems both
answered, a pair is *fixed* when A got it wrong and B right, *broken* the
reverse; pairs where both agree carry no information about which is better.

- Sign test (exact McNemar): under H0 "A and B are exchangeable on every
  problem", each discordant pair is fixed with probability 1/2, so with
  n = fixed + broken, X ~ Binomial(n, 1/2) and the two-sided p is
  ``min(1, 2 * P(X <= min(fixed, broken)))``; p = 1 when n = 0. Computed
  exactly with integers (``math.comb``) and ``Fraction``.
- Pooling over seeds: each seed is a stratum of pairs. The exact conditional
  (Mantel-Haenszel-type) test for paired binary data, conditioning on each
  pair's discordance, is the sign test on the discordant counts summed over
  strata, because under H0 every discordant pair of every stratum is an
  independent fair coin whatever its stratum.
- Accuracy difference B - A with a 95% Wald interval on the per-problem paired
  differences d = correct_B - correct_A in {-1, 0, 1}. Pairs of the same
  problem id in different strata (seeds on one held-out set) are correlated,
  so they form one cluster: ``se = sqrt(sum_j (D_j - m_j * dbar)^2) / N`` with
  D_j the sum and m_j the count of problem j's differences. With one stratum
  this is the textbook paired Wald ``se = sqrt(b + c - (b - c)^2 / N) / N``.
  Like every Wald interval it is too narrow with few discordant pairs (zero
  width when there are none); the sign test's p is the number to trust there.
"""

from __future__ import annotations

import math
from collections import defaultdict
from fractions import Fraction

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def sign_test_p(fixed: int, broken: int) -> Fraction:
    """Exact two-sided sign-test p-value of ``fixed`` vs ``broken`` discordant pairs, in [0, 1]."""
    if fixed < 0 or broken < 0:
        raise ValueError("counts must be non-negative")
    n = fixed + broken
    if n == 0:
        return Fraction(1)
    tail = sum(math.comb(n, i) for i in range(min(fixed, broken) + 1))
    return min(Fraction(1), Fraction(2 * tail, 2 ** n))


def paired_difference_ci(diffs: list[tuple[str, int]], z: float = Z_95) -> tuple[float, float, float] | None:
    """Mean of paired differences and its Wald interval, clustered by problem id.

    ``diffs`` holds ``(problem_id, d)`` with d in {-1, 0, 1}; returns
    ``(mean, low, high)`` clipped to [-1, 1], or ``None`` when empty.
    """
    if not diffs:
        return None
    n = len(diffs)
    mean = sum(d for _, d in diffs) / n
    total: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    for pid, d in diffs:
        total[pid] += d
        count[pid] += 1
    se = math.sqrt(sum((total[j] - count[j] * mean) ** 2 for j in total)) / n
    return mean, max(-1.0, mean - z * se), min(1.0, mean + z * se)


def paired_test(strata: list[tuple[dict[str, bool], dict[str, bool]]]) -> dict:
    """Compare B against A over one or more strata of per-problem correctness.

    Each stratum is ``(correct_A, correct_B)``, maps from problem id to bool;
    only ids in both maps are paired. Returns ``n`` (pairs), ``strata``,
    ``fixed`` (A wrong, B right), ``broken`` (A right, B wrong), ``acc_a``,
    ``acc_b`` (on the paired problems), ``diff`` (acc_b - acc_a), ``ci95``
    (of diff) and ``p`` (exact sign test on the summed discordant counts).
    """
    fixed = broken = a_right = b_right = 0
    diffs: list[tuple[str, int]] = []
    for a, b in strata:
        for pid in sorted(a.keys() & b.keys()):  # sorted: the same floats on every run
            ya, yb = bool(a[pid]), bool(b[pid])
            fixed += yb and not ya
            broken += ya and not yb
            a_right += ya
            b_right += yb
            diffs.append((pid, int(yb) - int(ya)))
    n = len(diffs)
    ci = paired_difference_ci(diffs)
    return {
        "n": n, "strata": len(strata), "fixed": fixed, "broken": broken,
        "acc_a": a_right / n if n else None, "acc_b": b_right / n if n else None,
        "diff": ci[0] if ci else None, "ci95": [ci[1], ci[2]] if ci else None,
        "p": float(sign_test_p(fixed, broken)),
    }
