"""benchmarks/step_values.py: the checker-free pair quality (Monte Carlo rollouts per pair side).

The verdict and summary by hand; the rollout driver on a scripted backend (which sides are rolled out,
in one call, resumed from its cache) and on the tiny random model through the real transformers backend.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tests.conftest import ScriptedBackend, load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "step_values.py"


sv = load_script(SCRIPT, "step_values")


def test_pair_verdict_compares_success_estimates():
    assert sv.pair_verdict((5, 32), (3, 32)) == "right"
    assert sv.pair_verdict((0, 32), (0, 32)) == "tie"  # a problem the policy never solves: no information
    assert sv.pair_verdict((3, 32), (5, 32)) == "wrong"
    # A finished side is known exactly: 1/1 beats 31/32, 0/1 loses to 1/32, 16/32 ties 1/2.
    assert sv.pair_verdict((1, 1), (31, 32)) == "right"
    assert sv.pair_verdict((0, 1), (1, 32)) == "wrong"
    assert sv.pair_verdict((16, 32), (1, 2)) == "tie"


def test_mc_summary_wilson_by_hand():
    # 6 right, 2 ties, 2 wrong: share 6/10. Wilson with z = 1.959964 (z^2 = 3.841459):
    # denom = 1 + 3.841459/10 = 1.384146; centre = (0.6 + 3.841459/20) / denom = 0.792073 / 1.384146 = 0.572247;
    # half = z * sqrt(0.6 * 0.4 / 10 + 3.841459/400) / denom = 1.959964 * 0.183313 / 1.384146 = 0.259573;
    # CI 0.312674 .. 0.831820. Mean gap (0.5 * 6 + 0 * 2 - 0.25 * 2) / 10 = 0.25.
    r = sv.mc_summary(["right"] * 6 + ["tie"] * 2 + ["wrong"] * 2, [0.5] * 6 + [0.0] * 2 + [-0.25] * 2)
    assert (r["mc_pairs"], r["mc_right"], r["mc_ties"], r["mc_wrong"]) == (10, 6, 2, 2)
    assert r["mc_right_share"] == 0.6 and r["mc_mean_gap"] == pytest.approx(0.25)
    assert r["mc_right_ci95"] == pytest.approx((0.312674, 0.831820), abs=1e-6)
    assert sv.mc_summary([], [])["mc_right_ci95"] is None


P = {"id": "p1", "question": "What is 3 + 4 + 2?", "answer": "9", "task": "math"}
PROMPT = "Q: What is 3 + 4 + 2?\nA:\n"  # ScriptedBackend.format_prompt(P)


def _pairs() -> list[dict]:
    def pair(prefix, chosen, rejected, chosen_terminal=False, rejected_terminal=False):
        return {"prompt": PROMPT + prefix, "chosen": chosen, "rejected": rejected, "problem_id": "p1",
                "chosen_terminal": chosen_terminal, "rejected_terminal": rejected_terminal}

    return [
        # right: the chosen side finishes right 2 of 2 times, the rejected side 1 of 2
        pair("3 + 4 = 7\n", "7 + 2 = 9\n", "7 + 2 = 10\n"),
        # tie: a right answer (finished, 1/1) against a side whose rollouts are right 2 of 2
        pair("3 + 4 = 7\n7 + 2 = 9\n", "The answer is 9.", "So the sum is 9.\n", chosen_terminal=True),
        # wrong: the chosen side's rollouts fail (0/2), the rejected side is a finished right answer (1/1);
        # its prefix repeats pair 1's chosen side, which is rolled out once for both
        pair("3 + 4 = 7\n", "7 + 2 = 9\n", "The answer is 9.", rejected_terminal=True),
    ]


def _scripted() -> ScriptedBackend:
    return ScriptedBackend({}, completions={
        "3 + 4 = 7\n7 + 2 = 9\n": ["The answer is 9."],
        "3 + 4 = 7\n7 + 2 = 10\n": ["The answer is 10.", "The answer is 9."],
        "3 + 4 = 7\n7 + 2 = 9\nSo the sum is 9.\n": ["The answer is 9."],
    })


def test_mc_pair_quality_rolls_out_unfinished_sides_once_in_one_call(tmp_path):
    pairs = _pairs()
    # Pair 3's chosen side is pair 1's: it gets pair 1's 2/2, so pair 3 (2/2 against 1/1) is a tie, not wrong.
    # Make pair 3 wrong with its own failing side instead.
    pairs[2]["chosen"] = "7 + 2 = 8\n"
    backend = _scripted()
    backend.completions["3 + 4 = 7\n7 + 2 = 8\n"] = ["The answer is 8."]
    cache = tmp_path / "mc.jsonl"
    verdicts, gaps, tokens = sv.mc_pair_quality(backend, pairs, {"p1": P}, {"p1": PROMPT}, 2, cache)
    assert verdicts == ["right", "tie", "wrong"]
    assert gaps == [0.5, 0.0, -1.0]  # 1 - 1/2, 1 - 1, 0 - 1
    # 4 unfinished sides, 2 rows each, in one call; the finished sides were not rolled out.
    assert len(backend.complete_calls) == 1
    prefixes, n = backend.complete_calls[0]
    assert n == [2, 2, 2, 2] and not any(p.endswith("The answer is 9.") for p in prefixes)
    assert len(cache.read_text().splitlines()) == 4
    # Resumed from the cache: no new rollouts, the same verdicts and token count.
    again = sv.mc_pair_quality(backend, pairs, {"p1": P}, {"p1": PROMPT}, 2, cache)
    assert again == (verdicts, gaps, tokens) and len(backend.complete_calls) == 1
    # Another N is another estimate: the cache of N = 2 is not reused for N = 3.
    sv.mc_pair_quality(backend, pairs, {"p1": P}, {"p1": PROMPT}, 3, cache)
    assert len(backend.complete_calls) == 2 and backend.complete_calls[1][1] == [3, 3, 3, 3]


def test_a_shared_side_is_one_estimate():
    backend = _scripted()
    verdicts, _, _ = sv.mc_pair_quality(backend, _pairs(), {"p1": P}, {"p1": PROMPT}, 2)
    # Pair 3's chosen side is pair 1's (2/2 right) against a finished right answer (1/1): a tie.
    assert verdicts == ["right", "tie", "tie"]
    assert len(backend.complete_calls[0][0]) == 3  # 3 distinct unfinished sides


def test_mc_pair_quality_refuses_another_prompt():
    with pytest.raises(SystemExit, match="prompt differs"):
        sv.mc_pair_quality(_scripted(), _pairs(), {"p1": P}, {"p1": "Other exemplars\n" + PROMPT}, 2)


def test_settings_are_checked_and_work_dirs_do_not_mix(tmp_path):
    with pytest.raises(SystemExit, match="unknown setting"):
        sv.main(["--work", str(tmp_path / "w"), "--only", "paper,nope"])
    problems = tmp_path / "problems.jsonl"
    problems.write_text(json.dumps(P) + "\n")
    args = dict(model="default", shots=2, shots_from=None, max_depth=8, problems=str(problems), n=64, limit=None)
    path, shots = sv._setup(argparse.Namespace(**args), tmp_path)
    assert path == problems and shots == ["--shots", "2"]
    assert sv._setup(argparse.Namespace(**args), tmp_path) == (path, shots)  # the same settings resume
    with pytest.raises(SystemExit, match="use another --work"):
        sv._setup(argparse.Namespace(**dict(args, max_depth=6)), tmp_path)


def test_mc_pair_quality_on_the_tiny_model(tiny_model_dir, tmp_path):
    """Trees from the real transformers backend, their pairs, and 2 rollouts per unfinished side (mechanics only)."""
    from mcts_pref.backends import load_backend
    from mcts_pref.pairs import tree_pairs
    from mcts_pref.mcts import Config, search_trees
    from mcts_pref.policy_spec import PolicySpec

    backend = load_backend(PolicySpec(model=str(tiny_model_dir), prompt_format="plain", shots=0))
    problems = {p["id"]: p for p in (P, dict(P, id="p2", question="What is 5 + 1 + 2?", answer="8"))}
    cfg = Config(iterations=1, children=2, root_children=2, depth_limit=2, max_depth=3, max_step_tokens=6, top_p=1.0,
                 seed=3, value="self-eval=1,outcome=1")
    trees = list(search_trees(backend, list(problems.values()), cfg))
    prompts = {t["problem_id"]: t["prompt"] for t in trees}
    pairs = [p for t in trees for p in tree_pairs(t)]  # the random model solves nothing: take every tree's pairs
    assert pairs
    before = backend.stats["tokens"]
    cache = tmp_path / "mc.jsonl"
    row = sv.mc_row(backend, pairs, problems, prompts, 2, cache, max_tokens=8)  # a random model rarely stops
    assert row["mc_pairs"] == len(pairs) == row["mc_right"] + row["mc_ties"] + row["mc_wrong"]
    assert row["mc_rollouts"] == 2 and row["checked_mc_pairs"] <= row["mc_pairs"]
    lines = [json.loads(x) for x in cache.read_text().splitlines()]
    unfinished = {p["prompt"] + p[s] for p in pairs for s in ("chosen", "rejected") if not p[f"{s}_terminal"]}
    assert len(lines) == len(unfinished) and all(x["rollouts"] == 2 for x in lines)
    assert row["mc_tokens"] == sum(x["tokens"] for x in lines) == backend.stats["tokens"] - before > 0
    assert sv.mc_row(backend, pairs, problems, prompts, 2, cache, max_tokens=8) == row  # resumed: nothing generated
    assert backend.stats["tokens"] - before == row["mc_tokens"]
