"""Every statistic the stages print: Wilson intervals (`evaluate`) and paired tests (`report`).

Two policies answer the same held-out problems. On the problems both
answered, a pair is *fixed* when A got it wrong and B right, *broken* the
reverse; pairs where both agree carry no information about which is better.

- Sign test (exact McNemar): under H0 "A and B are exchangeable on every
  problem", each discordant pair is fixed with probability 1/2, so with
  n = fixed + broken, X ~ Binomial(n, 1/2) and the two-sided p is
  ``min(1, 2 * P(X <= min(fixed, broken)))``; p = 1 when n = 0. Computed
  exactly with integers (``math.comb``) and ``Fraction``.
- Pooling over seeds on their own problems: each seed is a stratum of pairs.
  The exact conditional (Mantel-Haenszel-type) test for paired binary data,
  conditioning on each pair's discordance, is the sign test on the discordant
  counts summed over strata, because under H0 every discordant pair of every
  stratum is an independent fair coin whatever its stratum.
- Accuracy difference B - A with a 95% Wald interval on the per-problem paired
  differences d = correct_B - correct_A in {-1, 0, 1}. Pairs of the same
  problem id in different strata (seeds on one held-out set) are correlated,
  so they form one cluster: ``se = sqrt(sum_j (D_j - m_j * dbar)^2) / N`` with
  D_j the sum and m_j the count of problem j's differences. With one stratum
  this is the textbook paired Wald ``se = sqrt(b + c - (b - c)^2 / N) / N``.
  Like every Wald interval it is too narrow with few discordant pairs (zero
  width when there are none); the sign test's p is the number to trust there.
- Pooling seeds that share problems: the sign test above then treats one
  problem's outcomes in several seeds as independent coins, which they are not
  (an easy problem is easy in every seed), and its p is too small. The
  sign-flip test clusters by problem instead: with D_j the sum of problem j's
  differences over seeds, H0 makes each D_j's sign a fair coin, independent
  across problems, so the p of the observed ``T = |sum_j D_j|`` is the share of
  the 2^k sign patterns of the k nonzero D_j with ``|sum_j +-D_j| >= T``. The
  D_j are integers, so the patterns are counted exactly by their sums (a
  subset-sum count, O(k * sum |D_j|)); past ``max_work`` a seeded Monte Carlo
  of ``draws`` patterns estimates it, ``p = (hits + 1) / (draws + 1)``. With
  no shared problem every D_j is +-1 and this is the sign test again.
- The seed as the unit: per-seed differences y_i, their mean, a Student t
  interval ``mean +- t(0.975, n - 1) * sd / sqrt(n)`` and a sign test on the
  seeds with y_i > 0 against those with y_i < 0; and a DerSimonian-Laird
  random-effects pooled estimate from the y_i and their paired variances.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from fractions import Fraction

Z_95 = 1.959963984540054  # two-sided 95% normal quantile
FLIP_DRAWS = 20_000  # Monte Carlo sign patterns when counting them all would cost more than FLIP_MAX_WORK
FLIP_MAX_WORK = 20_000_000  # k * sum |D_j| steps of the exact count (a few seconds of pure Python)


def wilson_interval(correct: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion; ``None`` when n == 0.

    centre = (p + z^2/2n) / (1 + z^2/n),
    half   = z * sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n).
    """
    if n == 0:
        return None
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def sign_test_p(fixed: int, broken: int) -> Fraction:
    """Exact two-sided sign-test p-value of ``fixed`` vs ``broken`` discordant pairs, in [0, 1]."""
    if fixed < 0 or broken < 0:
        raise ValueError("counts must be non-negative")
    n = fixed + broken
    if n == 0:
        return Fraction(1)
    tail = sum(math.comb(n, i) for i in range(min(fixed, broken) + 1))
    return min(Fraction(1), Fraction(2 * tail, 2 ** n))


def problem_sums(diffs: list[tuple[str, int]]) -> dict[str, int]:
    """D_j: each problem id's differences summed over the strata it is in."""
    total: dict[str, int] = defaultdict(int)
    for pid, d in diffs:
        total[pid] += d
    return dict(total)


def _mean_se(diffs: list[tuple[str, int]]) -> tuple[float, float]:
    n = len(diffs)
    mean = sum(d for _, d in diffs) / n
    count: dict[str, int] = defaultdict(int)
    for pid, _ in diffs:
        count[pid] += 1
    return mean, math.sqrt(sum((d_j - count[j] * mean) ** 2 for j, d_j in problem_sums(diffs).items())) / n


def paired_difference_ci(diffs: list[tuple[str, int]], z: float = Z_95) -> tuple[float, float, float] | None:
    """Mean of paired differences and its Wald interval, clustered by problem id.

    ``diffs`` holds ``(problem_id, d)`` with d in {-1, 0, 1}; returns
    ``(mean, low, high)`` clipped to [-1, 1], or ``None`` when empty.
    """
    if not diffs:
        return None
    mean, se = _mean_se(diffs)
    return mean, max(-1.0, mean - z * se), min(1.0, mean + z * se)


def sign_flip_test(sums: list[int], *, draws: int = FLIP_DRAWS, seed: int = 0,
                   max_work: int = FLIP_MAX_WORK) -> dict:
    """Two-sided sign-flip (permutation) test that the integer cluster sums ``sums`` centre on 0.

    Returns ``p`` in (0, 1], ``k`` (nonzero sums, the ones a flip moves),
    ``method`` (``"enumerated"``: every one of the 2^k sign patterns counted;
    ``"monte-carlo"``: ``draws`` seeded random patterns) and ``draws``
    (None when enumerated). The statistic is ``|sum|``; zeros are dropped.
    """
    d = [abs(int(x)) for x in sums if x]
    k, total, observed = len(d), sum(d), abs(sum(int(x) for x in sums))
    # A pattern puts a subset of the |D_j| on the + side, with sum s: its statistic is |2 s - total|.
    if k * total <= max_work:
        ways = [1] + [0] * total  # ways[s]: patterns whose + side sums to s
        reach = 0
        for x in d:
            reach += x
            for s in range(reach, x - 1, -1):
                ways[s] += ways[s - x]
        hits = sum(w for s, w in enumerate(ways) if abs(2 * s - total) >= observed)
        return {"p": float(Fraction(hits, 2 ** k)), "k": k, "method": "enumerated", "draws": None}
    rng = random.Random(seed)
    hits = 0
    for _ in range(draws):
        bits = rng.getrandbits(k)
        plus = sum(x for j, x in enumerate(d) if bits >> j & 1)
        hits += abs(2 * plus - total) >= observed
    # (hits + 1) / (draws + 1): the observed pattern counts as one draw, so p is never 0 and the test stays valid.
    return {"p": (hits + 1) / (draws + 1), "k": k, "method": "monte-carlo", "draws": draws}


def paired_test(strata: list[tuple[dict[str, bool], dict[str, bool]]], *, seed: int = 0) -> dict:
    """Compare B against A over one or more strata of per-problem correctness.

    Each stratum is ``(correct_A, correct_B)``, maps from problem id to bool;
    only ids in both maps are paired. Returns ``n`` (pairs), ``strata``,
    ``fixed`` (A wrong, B right), ``broken`` (A right, B wrong), ``acc_a``,
    ``acc_b`` (on the paired problems), ``diff`` (acc_b - acc_a), ``se`` and
    ``ci95`` (of diff, clustered by problem), ``shared_problems`` (ids paired
    in more than one stratum), ``test`` and ``p``. With no shared problem the
    test is ``"sign"``, the exact sign test on the summed discordant counts;
    with some it is the sign-flip test over problems (``"sign-flip"``, or
    ``"sign-flip-mc"`` with ``draws``, Monte Carlo seeded by ``seed``), and
    ``p_if_independent`` keeps the sign test's p for comparison.
    """
    fixed = broken = a_right = b_right = 0
    diffs: list[tuple[str, int]] = []
    strata_of: dict[str, int] = defaultdict(int)
    for a, b in strata:
        for pid in sorted(a.keys() & b.keys()):  # sorted: the same floats on every run
            ya, yb = bool(a[pid]), bool(b[pid])
            fixed += yb and not ya
            broken += ya and not yb
            a_right += ya
            b_right += yb
            diffs.append((pid, int(yb) - int(ya)))
            strata_of[pid] += 1
    n = len(diffs)
    ci = paired_difference_ci(diffs)
    shared = sum(1 for c in strata_of.values() if c > 1)
    out = {
        "n": n, "strata": len(strata), "fixed": fixed, "broken": broken,
        "acc_a": a_right / n if n else None, "acc_b": b_right / n if n else None,
        "diff": ci[0] if ci else None, "se": _mean_se(diffs)[1] if n else None,
        "ci95": [ci[1], ci[2]] if ci else None, "shared_problems": shared,
        "test": "sign", "p": float(sign_test_p(fixed, broken)),
    }
    if shared:
        flip = sign_flip_test(list(problem_sums(diffs).values()), seed=seed)
        out.update(test="sign-flip" if flip["method"] == "enumerated" else "sign-flip-mc", draws=flip["draws"],
                   p=flip["p"], p_if_independent=out["p"])
    return out


# ---------------------------------------------------------------- the seed as the unit


def t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` >= 1 (Abramowitz & Stegun 26.7.3-4).

    With theta = atan(t / sqrt(df)): odd df,
    ``2/pi * (theta + sin(theta) * (cos + 2/3 cos^3 + 2*4/(3*5) cos^5 + ... up to cos^(df-2)))``;
    even df, ``sin(theta) * (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ... up to cos^(df-2))``.
    """
    if df < 1:
        raise ValueError("df must be >= 1")
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, c = math.cos(theta) ** 2, math.cos(theta)
    if df % 2:
        term, series = c, 0.0
        for j in range(1, (df - 1) // 2 + 1):  # df = 1: no terms
            series += term
            term *= c2 * (2 * j) / (2 * j + 1)
        return min(1.0, 2 / math.pi * (theta + math.sin(theta) * series))
    term, series = 1.0, 0.0
    for j in range(1, df // 2 + 1):
        series += term
        term *= c2 * (2 * j - 1) / (2 * j)
    return min(1.0, math.sin(theta) * series)


def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile of Student's t with integer ``df`` (bisection on :func:`t_two_sided_mass`), q in (0, 1)."""
    if not 0 < q < 1:
        raise ValueError("q must lie in (0, 1)")
    if q == 0.5:
        return 0.0
    mass = abs(2 * q - 1)  # P(|T| <= t_q) for the upper quantile t_q
    lo, hi = 0.0, 1.0
    while t_two_sided_mass(hi, df) < mass:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_two_sided_mass(mid, df) < mass:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    t = (lo + hi) / 2
    return t if q >= 0.5 else -t


def seed_summary(diffs: list[float], level: float = 0.95) -> dict | None:
    """The seed as the unit: per-seed differences (any unit) summarised over seeds.

    Returns ``n`` (seeds), ``mean``, ``sd`` (n - 1 in the denominator), ``se``
    (sd / sqrt n), ``t`` (the (1 + level)/2 quantile with n - 1 df), ``ci`` (mean
    -+ t * se; None with one seed), ``positive``, ``negative``, ``ties`` (seeds
    with diff > 0, < 0, = 0) and ``p``, the two-sided sign test over seeds (ties
    dropped). None when there is no seed.
    """
    n = len(diffs)
    if n == 0:
        return None
    mean = sum(diffs) / n
    positive, negative = sum(1 for d in diffs if d > 0), sum(1 for d in diffs if d < 0)
    out = {"n": n, "mean": mean, "sd": None, "se": None, "t": None, "ci": None,
           "positive": positive, "negative": negative, "ties": n - positive - negative,
           "p": float(sign_test_p(positive, negative))}
    if n >= 2:
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
        t = t_quantile((1 + level) / 2, n - 1)
        se = sd / math.sqrt(n)
        out.update(sd=sd, se=se, t=t, ci=[mean - t * se, mean + t * se])
    return out


def normal_two_sided_p(z: float) -> float:
    """2 * (1 - Phi(|z|))."""
    return math.erfc(abs(z) / math.sqrt(2))


def dersimonian_laird(effects: list[float], variances: list[float], z: float = Z_95) -> dict | None:
    """DerSimonian-Laird random-effects pooled estimate of per-seed ``effects`` with sampling ``variances``.

    w_i = 1 / v_i; fixed-effect ``theta_F = sum w y / sum w``; Cochran's
    ``Q = sum w (y - theta_F)^2``; ``tau2 = max(0, (Q - (k - 1)) / (sum w - sum w^2 / sum w))``;
    w*_i = 1 / (v_i + tau2); ``estimate = sum w* y / sum w*``, ``se = 1 / sqrt(sum w*)``,
    ``ci = estimate -+ z se``, ``p`` two-sided normal, ``i2 = max(0, (Q - (k - 1)) / Q)``.
    None with fewer than two seeds or a zero variance (a seed without a discordant pair).
    """
    k = len(effects)
    if k != len(variances):
        raise ValueError("effects and variances must have the same length")
    if k < 2 or any(v <= 0 for v in variances):
        return None
    w = [1 / v for v in variances]
    sw = sum(w)
    fixed = sum(wi * y for wi, y in zip(w, effects)) / sw
    q = sum(wi * (y - fixed) ** 2 for wi, y in zip(w, effects))
    tau2 = max(0.0, (q - (k - 1)) / (sw - sum(wi * wi for wi in w) / sw))
    ws = [1 / (v + tau2) for v in variances]
    est = sum(wi * y for wi, y in zip(ws, effects)) / sum(ws)
    se = 1 / math.sqrt(sum(ws))
    return {"k": k, "estimate": est, "se": se, "ci": [est - z * se, est + z * se], "p": normal_two_sided_p(est / se),
            "fixed": fixed, "q": q, "tau2": tau2, "i2": max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0}
