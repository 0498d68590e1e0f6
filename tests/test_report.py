"""report: the table, compute accounting, and paired tests checked against hand-worked exact values."""

import json
from fractions import Fraction

import pytest
from typer.testing import CliRunner

from mcts_pref.cli import app
from mcts_pref.stats import (
    dersimonian_laird, paired_difference_ci, paired_test, seed_summary, sign_flip_test, sign_test_p, t_quantile,
)
from tests.conftest import write_jsonl

runner = CliRunner()


def scored_dir(d, right, ids, report=True, extra=()):
    """A stage dir whose scored.jsonl has one sample per id in ``ids``, correct iff the id is in ``right``."""
    d.mkdir(parents=True, exist_ok=True)
    recs = [{"problem_id": i, "sample_index": 0, "correct": i in right, "n_tokens": 10} for i in ids]
    write_jsonl(d / "scored.jsonl", recs + list(extra))
    write_jsonl(d / "samples.jsonl", recs)
    if report:
        acc = sum(i in right for i in ids) / len(ids)
        (d / "report.json").write_text(json.dumps({"accuracy": acc, "ci95": [acc / 2, acc], "n_samples": len(ids)}))
    return d


# ---------------------------------------------------------------- pure statistics


def test_sign_test_exact_values():
    # n = fixed + broken, X ~ Bin(n, 1/2), p = min(1, 2 P(X <= min)).
    assert sign_test_p(0, 0) == 1  # no discordant pair: no evidence either way
    # n = 8: P(X <= 1) = (C(8,0) + C(8,1)) / 2^8 = 9/256, doubled 18/256 = 9/128.
    assert sign_test_p(7, 1) == Fraction(9, 128) == sign_test_p(1, 7)
    # n = 6: P(X <= 0) = 1/64, doubled 1/32.
    assert sign_test_p(6, 0) == Fraction(1, 32)
    # n = 12: P(X <= 2) = (1 + 12 + 66) / 4096 = 79/4096, doubled 79/2048 (0.0386).
    assert sign_test_p(10, 2) == Fraction(79, 2048)
    # n = 6, tie: P(X <= 3) = (1 + 6 + 15 + 20) / 64 = 42/64, doubled > 1, so 1.
    assert sign_test_p(3, 3) == 1
    # n = 1: P(X <= 0) = 1/2, doubled 1.
    assert sign_test_p(1, 0) == 1
    with pytest.raises(ValueError):
        sign_test_p(-1, 2)


def test_paired_wald_interval_single_stratum():
    # N = 10, b = 3 fixed (+1), c = 1 broken (-1): mean (3 - 1)/10 = 0.2,
    # se = sqrt(b + c - (b - c)^2 / N) / N = sqrt(4 - 0.4) / 10 = 0.18974,
    # 0.2 -+ 1.959964 * 0.18974 = -0.171877 .. 0.571877.
    diffs = [(f"p{i}", d) for i, d in enumerate([1, 1, 1, -1, 0, 0, 0, 0, 0, 0])]
    mean, lo, hi = paired_difference_ci(diffs)
    assert mean == pytest.approx(0.2) and lo == pytest.approx(-0.171877, abs=1e-6) and hi == pytest.approx(0.571877, abs=1e-6)
    assert paired_difference_ci([]) is None
    assert paired_difference_ci([("a", 0), ("b", 0)]) == (0.0, 0.0, 0.0)  # Wald's known zero width


def test_paired_wald_interval_clusters_a_problem_over_seeds():
    # Two seeds on the same problems p1..p4. Seed A: p1 +1, p2 +1; seed B: p1 +1, p2 -1; the rest 0.
    # N = 8, mean = 2/8 = 0.25. Cluster sums D = (2, 0, 0, 0), each m = 2, so residuals
    # D - 2 * 0.25 = (1.5, -0.5, -0.5, -0.5), squares sum to 3.0; se = sqrt(3)/8 = 0.216506,
    # 0.25 -+ 1.959964 * 0.216506 = -0.174345 .. 0.674345 (unclustered it would be sqrt(3.5)/8).
    diffs = [("p1", 1), ("p2", 1), ("p3", 0), ("p4", 0), ("p1", 1), ("p2", -1), ("p3", 0), ("p4", 0)]
    mean, lo, hi = paired_difference_ci(diffs)
    assert mean == 0.25 and lo == pytest.approx(-0.174345, abs=1e-6) and hi == pytest.approx(0.674345, abs=1e-6)


def test_paired_test_pairs_by_id_only():
    a = {"p1": False, "p2": True, "p3": True, "only-a": True}
    b = {"p1": True, "p2": False, "p3": True, "only-b": False}
    r = paired_test([(a, b)])
    assert (r["n"], r["fixed"], r["broken"], r["strata"]) == (3, 1, 1, 1)
    assert r["acc_a"] == pytest.approx(2 / 3) and r["acc_b"] == pytest.approx(2 / 3) and r["diff"] == 0
    assert r["p"] == 1.0  # n = 2, P(X <= 1) = 3/4, doubled > 1
    empty = paired_test([({"x": True}, {"y": True})])
    assert empty["n"] == 0 and empty["p"] == 1.0 and empty["diff"] is None and empty["ci95"] is None


def test_sign_flip_test_enumerated_by_hand():
    # Problem sums D = (3, 3, 2, -1, 1, 0): the 0 never moves, k = 5, total |D| = 10, observed |sum| = 8.
    # A sign pattern with + side summing to s has |sum| = |2 s - 10|, >= 8 iff s <= 1 or s >= 9.
    # Subsets of {3, 3, 2, 1, 1} with sum <= 1: {}, {1}, {1'}: 3; sum >= 9 is the complement of one: 3.
    # p = 6 / 2^5 = 3/16.
    r = sign_flip_test([3, 3, 2, -1, 1, 0])
    assert r == {"p": 3 / 16, "k": 5, "method": "enumerated", "draws": None}
    # Unshared problems (every D = +-1): the sign test again. 7 vs 1: 9/128; 10 vs 2: 79/2048.
    assert sign_flip_test([1] * 7 + [-1])["p"] == 9 / 128
    assert sign_flip_test([-1] * 2 + [1] * 10)["p"] == 79 / 2048
    # Balanced: every pattern is at least as extreme as 0.
    assert sign_flip_test([2, -2, 1, -1])["p"] == 1.0 and sign_flip_test([])["p"] == 1.0
    # (4, 1): k = 2, total 5, observed 5; s in {0, 1, 4, 5} gives |2s - 5| in {5, 3, 3, 5}: p = 2/4.
    assert sign_flip_test([4, 1])["p"] == 0.5


def test_sign_flip_test_monte_carlo_past_the_work_limit():
    # Forced onto Monte Carlo: seeded (same p twice), labelled, never 0, and near the counted 3/16
    # (binomial sd of the estimate sqrt(0.1875 * 0.8125 / 20000) = 0.0028; 5 sd = 0.014).
    r = sign_flip_test([3, 3, 2, -1, 1], max_work=0)
    assert r["method"] == "monte-carlo" and r["draws"] == 20_000 and r["k"] == 5
    assert r == sign_flip_test([3, 3, 2, -1, 1], max_work=0)
    assert abs(r["p"] - 3 / 16) < 0.014
    assert sign_flip_test([5] * 40, max_work=0, draws=999)["p"] == 1 / 1000  # (0 hits + 1) / (999 + 1)


def test_paired_test_clusters_problems_shared_by_strata():
    # Two seeds on p1..p3 (shared), seed B also on p4 (its own). Seed A: p1 +1, p2 +1; seed B: p1 +1, p3 -1, p4 +1.
    # D = p1 2, p2 1, p3 -1, p4 1: k = 4, total 5, observed |3| = 3; |2s - 5| >= 3 iff s <= 1 or s >= 4.
    # Subsets of {2, 1, 1, 1}: sums 0 (1 way), 1 (3 ways), 4 (3 ways: {2, 1, 1}), 5 (1 way): 8 of 16, p = 1/2.
    a1, b1 = {"p1": False, "p2": False, "p3": True}, {"p1": True, "p2": True, "p3": True}
    a2, b2 = {"p1": False, "p2": True, "p3": True, "p4": False}, {"p1": True, "p2": True, "p3": False, "p4": True}
    r = paired_test([(a1, b1), (a2, b2)])
    assert (r["n"], r["fixed"], r["broken"], r["shared_problems"], r["test"]) == (7, 4, 1, 3, "sign-flip")
    assert r["p"] == 0.5 and r["draws"] is None
    # As independent coins: 4 vs 1, P(X <= 1) = 6/32, doubled 12/32 = 3/8.
    assert r["p_if_independent"] == 3 / 8
    # Disjoint ids: the stratified sign test stays.
    plain = paired_test([(a1, b1), ({"q": False}, {"q": True})])
    assert plain["test"] == "sign" and plain["shared_problems"] == 0 and "p_if_independent" not in plain
    assert plain["p"] == float(sign_test_p(3, 0)) == 0.25


def test_t_quantile_against_tables():
    # Student t 0.975 quantiles from any table: df 1 12.7062, 2 4.3027, 5 2.5706, 30 2.0423; df -> inf: 1.9600.
    for df, t in ((1, 12.706205), (2, 4.302653), (5, 2.570582), (30, 2.042272), (1000, 1.962339)):
        assert t_quantile(0.975, df) == pytest.approx(t, abs=1e-6), df
    # df = 2 in closed form: P(|T| <= t) = t / sqrt(2 + t^2) = 0.95 gives t^2 = 0.9025 * 2 / 0.0975.
    assert t_quantile(0.975, 2) == pytest.approx((0.9025 * 2 / 0.0975) ** 0.5, rel=1e-12)
    assert t_quantile(0.025, 4) == -t_quantile(0.975, 4) and t_quantile(0.5, 3) == 0.0


def test_seed_summary_by_hand():
    # Three seeds, differences +8.2, +0.8, +0.4 points. mean = 9.4 / 3 = 3.1333;
    # deviations 5.0667, -2.3333, -2.7333, squares 25.6711 + 5.4444 + 7.4711 = 38.5867,
    # sd = sqrt(38.5867 / 2) = 4.39242, se = sd / sqrt(3) = 2.53596, t(0.975, 2) = 4.302653,
    # half-width 10.91137: CI -7.778 .. +14.045. Sign test: 3 up, 0 down, p = 2 / 8 = 0.25.
    r = seed_summary([8.2, 0.8, 0.4])
    assert r["n"] == 3 and r["mean"] == pytest.approx(3.133333, abs=1e-6)
    assert r["sd"] == pytest.approx(4.392418, abs=1e-6) and r["se"] == pytest.approx(2.535964, abs=1e-6)
    assert r["t"] == pytest.approx(4.302653, abs=1e-6)
    assert r["ci"] == pytest.approx([-7.778037, 14.044704], abs=1e-5)
    assert (r["positive"], r["negative"], r["ties"], r["p"]) == (3, 0, 0, 0.25)
    # A tie is dropped from the sign test: 1 up, 1 down, 1 tie: p = 1. One seed: no interval.
    assert seed_summary([0.1, -0.1, 0.0])["p"] == 1.0 and seed_summary([0.1, -0.1, 0.0])["ties"] == 1
    one = seed_summary([0.05])
    assert one["ci"] is None and one["p"] == 1.0 and seed_summary([]) is None


def test_dersimonian_laird_by_hand():
    # y = (0, 0.2, 0.4), v = (0.01, 0.01, 0.04): w = (100, 100, 25), sum 225.
    # fixed = (0 + 20 + 10) / 225 = 0.133333; Q = 100 * 0.133333^2 + 100 * 0.066667^2 + 25 * 0.266667^2
    #   = 1.777778 + 0.444444 + 1.777778 = 4.0 on 2 df, I2 = (4 - 2) / 4 = 0.5.
    # C = 225 - (100^2 + 100^2 + 25^2) / 225 = 225 - 91.666667 = 133.333333; tau2 = 2 / 133.333333 = 0.015.
    # w* = 1 / (v + 0.015) = (40, 40, 18.181818), sum 98.181818 = 1080/11;
    # estimate = (0 + 8 + 7.272727) / 98.181818 = 168/1080 = 0.155556, se = sqrt(11/1080) = 0.100922,
    # CI 0.155556 -+ 1.959964 * 0.100922 = -0.042247 .. 0.353358; z = 1.541352, p = 0.123232.
    r = dersimonian_laird([0.0, 0.2, 0.4], [0.01, 0.01, 0.04])
    assert r["fixed"] == pytest.approx(0.133333, abs=1e-6) and r["q"] == pytest.approx(4.0)
    assert r["tau2"] == pytest.approx(0.015) and r["i2"] == pytest.approx(0.5)
    assert r["estimate"] == pytest.approx(7 / 45) and r["se"] == pytest.approx((11 / 1080) ** 0.5)
    assert r["ci"] == pytest.approx([-0.042247, 0.353358], abs=1e-6) and r["p"] == pytest.approx(0.123232, abs=1e-6)
    # Homogeneous seeds (Q < k - 1): tau2 = 0 and it is the fixed-effect estimate.
    h = dersimonian_laird([0.1, 0.1], [0.01, 0.03])
    assert h["tau2"] == 0 and h["estimate"] == pytest.approx(0.1) and h["se"] == pytest.approx((1 / 133.333333) ** 0.5)
    # A seed with no discordant pair has variance 0: undefined, None; so is one seed.
    assert dersimonian_laird([0.1, 0.0], [0.01, 0.0]) is None and dersimonian_laird([0.1], [0.01]) is None


# ---------------------------------------------------------------- one run, through the CLI

IDS = [f"p{i}" for i in range(12)]


def one_run(tmp_path):
    """round-0 right on p0, p1; round-1 right on p1..p8 (fixed p2..p8 = 7, broken p0 = 1);
    round-2 right on p0..p3 (vs round-1: fixed p0, broken p4..p8)."""
    run = tmp_path / "run"
    # An unpaired problem in round-0 must not count; a second sample of p0 in round-1
    # (correct, after the first) must not count either: the first sample per problem is used.
    scored_dir(run / "round-0", {"p0", "p1", "p99"}, IDS + ["p99"])
    scored_dir(run / "round-1", {f"p{i}" for i in range(1, 9)}, IDS,
               extra=[{"problem_id": "p0", "sample_index": 1, "correct": True}])
    scored_dir(run / "round-2", {"p0", "p1", "p2", "p3"}, IDS)
    return run


def test_report_sign_test_against_round_0(tmp_path):
    run = one_run(tmp_path)
    r = runner.invoke(app, ["report", str(run), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [x["name"] for x in rows] == ["round-0", "round-1", "round-2"]
    assert rows[0]["vs_round0"] is None
    vs = rows[1]["vs_round0"]
    # 12 paired; fixed 7 broken 1: p = 9/128 (see test_sign_test_exact_values).
    assert (vs["n"], vs["fixed"], vs["broken"], vs["p"]) == (12, 7, 1, 9 / 128)
    assert vs["acc_a"] == pytest.approx(2 / 12) and vs["acc_b"] == pytest.approx(8 / 12)
    # diff = 6/12 = 0.5; se = sqrt(8 - 36/12)/12 = sqrt(5)/12 = 0.186339; 0.5 -+ 0.365218.
    assert vs["diff"] == 0.5 and vs["ci95"] == pytest.approx([0.134782, 0.865218], abs=1e-6)
    # round-2 vs round-0: fixed p2, p3; broken none: n = 2, P(X <= 0) = 1/4, p = 1/2.
    assert (rows[2]["vs_round0"]["fixed"], rows[2]["vs_round0"]["broken"], rows[2]["vs_round0"]["p"]) == (2, 0, 0.5)
    r = runner.invoke(app, ["report", str(run)])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.stdout.splitlines() if "round-1 vs round-0" in x)
    assert line.split()[-3:] == ["7", "1", "0.0703"]  # fixed, broken, p in the paired-tests table


def test_report_compare_two_stages_of_one_run(tmp_path):
    run = one_run(tmp_path)
    r = runner.invoke(app, ["report", str(run), "--compare", "round-1,round-2", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [x["name"] for x in out["runs"][0]["rows"]] == ["round-0", "round-1", "round-2"]
    assert [(c["b"], c["a"]) for c in out["comparisons"]] == [
        ("round-1", "round-0"), ("round-2", "round-0"), ("round-2", "round-1")]
    c = out["comparisons"][2]
    assert c["pooled"] is None
    (s,) = c["strata"]
    # round-2 against round-1: fixed p0 (1), broken p4..p8 (5): n = 6, P(X <= 1) = 7/64, p = 14/64 = 7/32.
    assert (s["n"], s["fixed"], s["broken"], s["p"]) == (12, 1, 5, 7 / 32)
    r = runner.invoke(app, ["report", str(run), "--compare", "round-1,round-2"])
    assert r.exit_code == 0 and "paired tests" in r.stdout
    line = next(x for x in r.stdout.splitlines() if "round-2 vs round-1" in x)
    assert line.split()[-3:] == ["1", "5", "0.219"]


def test_report_errors(tmp_path):
    run = one_run(tmp_path)
    for bad in ("round-1", "round-1,", "a,b,c"):
        r = runner.invoke(app, ["report", str(run), "--compare", bad])
        assert r.exit_code == 2 and "--compare wants two stages" in r.output, (bad, r.output)
    r = runner.invoke(app, ["report", str(run), "--compare", "round-1,round-7"])
    assert r.exit_code == 2 and f"{run / 'round-7' / 'scored.jsonl'} not found" in r.output
    r = runner.invoke(app, ["report", str(run), str(run), "--plot", str(tmp_path / "x.png")])
    assert r.exit_code == 2 and "one RUN" in r.output
    with open(run / "round-2" / "scored.jsonl", "a") as f:
        f.write(json.dumps({"problem_id": "p5", "correct": "yes"}) + "\n")
    r = runner.invoke(app, ["report", str(run)])
    assert r.exit_code == 2 and f"{run / 'round-2' / 'scored.jsonl'}:13:" in r.output


# ---------------------------------------------------------------- seeds pooled

Q = [f"q{i}" for i in range(5)]
# Per seed, (round-0 right, round-1 right) on the same five problems q0..q4:
#   s0: fixed q0 q1 q2                    -> (3, 0), p = 2/8 = 1/4
#   s1: fixed q0 q1, broken q3            -> (2, 1), p = 1
#   s2: fixed q0 q1 q2 q4                 -> (4, 0), p = 2/16 = 1/8
SEEDS = {"s0": (set(), {"q0", "q1", "q2"}),
         "s1": ({"q3"}, {"q0", "q1"}),
         "s2": (set(), {"q0", "q1", "q2", "q4"})}
# Pooled: fixed 9, broken 1. As independent coins: n = 10, P(X <= 1) = 11/1024, p = 22/1024 = 11/512 (0.0215).
# But the seeds share q0..q4, so the test is clustered by problem: per-problem sums over seeds
# D = q0 3, q1 3, q2 2, q3 -1, q4 1, and the sign-flip p is 6/32 = 3/16 (test_sign_flip_test_enumerated_by_hand).
# Difference: D as above (m = 3 each), N = 15, mean = 8/15; residuals D - 3 * 8/15 = (1.4, 1.4, 0.4, -2.6, -0.6),
# squares 11.2, se = sqrt(11.2)/15 = 0.223109, 8/15 -+ 1.959964 * 0.223109 = 0.096047 .. 0.970620.
POOLED = {"n": 15, "strata": 3, "fixed": 9, "broken": 1, "p": 3 / 16, "p_if_independent": 11 / 512,
          "test": "sign-flip", "shared_problems": 5}
# The seed as the unit: per-seed diffs 0.6, 0.2, 0.8; mean 1.6/3 = 0.533333; deviations 0.066667, -0.333333,
# 0.266667, squares sum 0.186667, sd = sqrt(0.093333) = 0.305505, se = 0.176383, t(0.975, 2) = 4.302653:
# 0.533333 -+ 0.758917 = -0.225583 .. 1.292250; 3 seeds up, 0 down: sign test p = 1/4.
# Random effects: paired variances (b + c - (b - c)^2 / N) / N^2 = 1.2/25, 2.8/25, 0.8/25 = 0.048, 0.112, 0.032;
# w = 20.833333, 8.928571, 31.25 (sum 61.011905); fixed = 39.285714 / 61.011905 = 0.643902;
# Q = 0.040154 + 1.759364 + 0.761458 = 2.560976; C = 61.011905 - 1490.309 / 61.011905 = 36.585366,
# tau2 = 0.560976 / 36.585366 = 0.015333; w* = 1 / (v + tau2) = 15.789474, 7.853403, 21.126761 (sum 44.769637);
# estimate = (9.473684 + 1.570681 + 16.901408) / 44.769637 = 0.624213, se = 1 / sqrt(44.769637) = 0.149454.


def seed_runs(tmp_path):
    runs = []
    for name, (r0, r1) in SEEDS.items():
        run = tmp_path / name
        scored_dir(run / "round-0", r0, Q)
        scored_dir(run / "round-1", r1, Q)
        runs.append(run)
    return runs


def check_pooled(c, labels):
    assert [s["stratum"] for s in c["strata"]] == labels
    assert [(s["fixed"], s["broken"], s["p"]) for s in c["strata"]] == [(3, 0, 0.25), (2, 1, 1.0), (4, 0, 0.125)]
    pooled = c["pooled"]
    assert {k: pooled[k] for k in POOLED} == POOLED
    assert pooled["diff"] == pytest.approx(8 / 15)
    assert pooled["ci95"] == pytest.approx([0.096047, 0.970620], abs=1e-6)
    seeds = c["seeds"]
    assert seeds["mean"] == pytest.approx(0.533333, abs=1e-6) and seeds["sd"] == pytest.approx(0.305505, abs=1e-6)
    assert seeds["ci"] == pytest.approx([-0.225583, 1.292250], abs=1e-6)
    assert (seeds["n"], seeds["positive"], seeds["negative"], seeds["p"]) == (3, 3, 0, 0.25)
    re_ = c["random_effects"]
    assert re_["q"] == pytest.approx(2.560976, abs=1e-6) and re_["tau2"] == pytest.approx(0.015333, abs=1e-6)
    assert re_["estimate"] == pytest.approx(0.624213, abs=1e-6) and re_["se"] == pytest.approx(0.149454, abs=1e-6)


def test_report_pool_over_seeds(tmp_path):
    runs = seed_runs(tmp_path)
    r = runner.invoke(app, ["report", *map(str, runs), "--pool", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [x["run"] for x in out["runs"]] == [str(x) for x in runs]
    (c,) = out["comparisons"]
    assert (c["a"], c["b"]) == ("round-0", "round-1")
    check_pooled(c, [str(x) for x in runs])
    # A named --compare over the same runs is the same test.
    r = runner.invoke(app, ["report", *map(str, runs), "--pool", "--compare", "round-0,round-1", "--json"])
    assert r.exit_code == 0, r.output
    check_pooled(json.loads(r.stdout)["comparisons"][1], [str(x) for x in runs])
    r = runner.invoke(app, ["report", *map(str, runs), "--pool"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    pooled_line = next(x for x in lines if x.strip().startswith("pooled over 3, clustered by problem"))
    assert pooled_line.split()[-3:] == ["9", "1", "0.188"]
    assert "(5 problems in >1 seed)" in " ".join(r.stdout.split())
    seeds_line = next(x for x in lines if x.strip().startswith("seeds as the unit (3)"))
    # The t interval -22.6 .. +129.2 is shown clipped to the possible +-100.
    assert seeds_line.split()[-8:] == ["3", "+53.3", "-22.6", "to", "+100.0", "3", "0", "0.25"]
    dl_line = next(x for x in lines if x.strip().startswith("random effects (DL)"))
    assert dl_line.split()[-7:-3] == ["+62.4", "+33.1", "to", "+91.7"]
    text = " ".join(r.stdout.split())
    assert "p is a sign-flip test over problems (every sign pattern counted)" in text and "would give 0.0215" in text
    assert "Cochran's Q 2.6 on 2 df" in text and "exact" not in text.split("paired tests")[1].split("fixed: wrong")[0]
    assert r.stdout.count("MCTS-DPO run") == 3


def test_report_pool_over_seeds_with_their_own_problems_keeps_the_sign_test(tmp_path):
    # Each seed on its own test set (ids prefixed by the seed): nothing to cluster, the stratified sign test stays,
    # p = 11/512 as above, and the seed-level rows are the same as with shared ids.
    runs = []
    for name, (r0, r1) in SEEDS.items():
        ids = [f"{name}-{q}" for q in Q]
        scored_dir(tmp_path / name / "round-0", {f"{name}-{q}" for q in r0}, ids)
        scored_dir(tmp_path / name / "round-1", {f"{name}-{q}" for q in r1}, ids)
        runs.append(tmp_path / name)
    r = runner.invoke(app, ["report", *map(str, runs), "--pool", "--json"])
    assert r.exit_code == 0, r.output
    (c,) = json.loads(r.stdout)["comparisons"]
    assert (c["pooled"]["test"], c["pooled"]["shared_problems"], c["pooled"]["p"]) == ("sign", 0, 11 / 512)
    assert c["seeds"]["mean"] == pytest.approx(0.533333, abs=1e-6) and c["random_effects"]["q"] == pytest.approx(2.560976)
    r = runner.invoke(app, ["report", *map(str, runs), "--pool"])
    pooled_line = next(x for x in r.stdout.splitlines() if x.strip().startswith("pooled over 3"))
    assert pooled_line.split()[-3:] == ["9", "1", "0.0215"] and "problems in >1 seed" not in r.stdout


def test_report_pool_path_compares_across_run_dirs(tmp_path):
    # Cross-run head-to-heads (e.g. two arms, one run dir per arm and seed) pool as the seeds of one comparison.
    runs = seed_runs(tmp_path)
    args = [x for run in runs for x in ("--compare", f"{run}/round-0,{run}/round-1")]
    r = runner.invoke(app, ["report", str(runs[0]), *args, "--pool", "--json"])
    assert r.exit_code == 0, r.output
    comps = json.loads(r.stdout)["comparisons"]
    assert comps[0]["b"] == "round-1" and len(comps[0]["strata"]) == 1  # run 0's own stage-vs-round-0
    check_pooled(comps[1], ["-"] * 3)
    assert [(s["a"], s["b"]) for s in comps[1]["strata"]] == [(f"{run}/round-0", f"{run}/round-1") for run in runs]
    # Without --pool each path pair stands alone.
    r = runner.invoke(app, ["report", str(runs[0]), *args, "--json"])
    assert r.exit_code == 0, r.output
    comps = json.loads(r.stdout)["comparisons"]
    assert len(comps) == 4 and all(c["pooled"] is None for c in comps)


# ---------------------------------------------------------------- table, compute, plot


def test_report_table_json_and_compute(tmp_path):
    run = tmp_path / "run"
    for k, acc in ((0, 0.25), (1, 0.5)):
        d = run / f"round-{k}"
        d.mkdir(parents=True)
        (d / "report.json").write_text(json.dumps({"accuracy": acc, "ci95": [acc - 0.1, acc + 0.1], "n_samples": 40}))
        write_jsonl(d / "samples.jsonl", [{"n_tokens": 10}, {"n_tokens": 5}])
    write_jsonl(run / "round-1" / "trees.jsonl", [{"correct": True, "stats": {"tokens": 60, "wall_s": 2.0, "wall_share_s": 0.5}},
                                                  {"correct": False, "stats": {"tokens": 40, "wall_s": 2.0, "wall_share_s": 0.75}}])
    write_jsonl(run / "round-1" / "pairs.jsonl", [{"prompt": "a"}] * 3)
    # A curriculum round: the pool's sampling tokens are training-data compute.
    write_jsonl(run / "round-1" / "pool_samples.jsonl", [{"n_tokens": 700}, {"n_tokens": 300}])
    (run / "round-1" / "adapter").mkdir()
    write_jsonl(run / "round-1" / "adapter" / "metrics.jsonl", [{"step": 1, "seconds": 2.0}, {"step": 2, "seconds": 3.5}])
    r = runner.invoke(app, ["report", str(run), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [x["name"] for x in rows] == ["round-0", "round-1"]
    assert rows[1]["pairs"] == 3 and rows[1]["search_tokens"] == 100 and rows[0]["sample_tokens"] == 15
    assert rows[1]["curriculum_tokens"] == 1000 and rows[0]["curriculum_tokens"] == 0
    assert rows[1]["train_s"] == 5.5 and rows[1]["train_steps"] == 2
    assert rows[1]["search_s"] == 1.25 and rows[0]["search_s"] is None  # shares add up; overlapping wall_s do not
    assert rows[1]["vs_round0"] is None  # no scored.jsonl: no paired test
    r = runner.invoke(app, ["report", str(run)])
    assert r.exit_code == 0 and "50.0%" in r.stdout
    line = next(x for x in r.stdout.splitlines() if x.strip().startswith("round-1"))
    assert "1,100" in line.split()  # data = 100 search + 1,000 curriculum sampling
    r = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert r.exit_code == 2


def test_report_plot(tmp_path):
    pytest.importorskip("matplotlib")
    d = tmp_path / "run" / "round-0"
    d.mkdir(parents=True)
    (d / "report.json").write_text(json.dumps({"accuracy": 0.3, "ci95": [0.2, 0.4], "n_samples": 10}))
    png = tmp_path / "p.png"
    r = runner.invoke(app, ["report", str(tmp_path / "run"), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:4] == b"\x89PNG"
