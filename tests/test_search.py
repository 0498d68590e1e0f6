"""The batched search driver and its CLI, on a scripted backend (no model)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcts_pref.policy_spec import PolicySpec
from mcts_pref import mcts
from mcts_pref.cli import app
from mcts_pref.records import MctsPrefError, read_records, validate
from mcts_pref.mcts import Config, search_trees
from mcts_pref.steps import ANSWER, STEP, Step
from tests.conftest import ScriptedBackend, scripted_step as _step


def says_answer(completion: str, problem: dict) -> bool:
    return f"The answer is {problem['answer']}" in completion


P1 = {"id": "p1", "question": "What is 3 + 4 + 2?", "answer": "9", "task": "math"}
SCRIPT = {
    "": ["Add 3 and 4 to get 7.\n", "Guess.\n"],
    "Add 3 and 4 to get 7.\n": ["Then 7 + 2 = 9.\n"],
    "Add 3 and 4 to get 7.\nThen 7 + 2 = 9.\n": ["The answer is 9\n"],
    "Guess.\n": ["The answer is 8\n"],
}
SMALL = dict(iterations=2, children=1, root_children=2, depth_limit=4, max_depth=6, resample_duplicates=0)


def _run(backend, problems, **cfg) -> list[dict]:
    return list(search_trees(backend, problems, Config(**cfg), outcome_fn=says_answer))


def _texts(rec: dict) -> list[str]:
    return [rec["nodes"][i]["text"] for i in rec["path"]]


def test_search_commits_to_the_correct_leaf():
    [rec] = _run(ScriptedBackend(SCRIPT), [P1], **SMALL)
    validate(rec, "tree")
    assert _texts(rec) == ["", "Add 3 and 4 to get 7.\n", "Then 7 + 2 = 9.\n", "The answer is 9\n"]
    leaf = rec["nodes"][rec["path"][-1]]
    assert leaf["terminal"] and leaf["correct"] and leaf["outcome"] == 1 and leaf["finish"] == ANSWER
    assert rec["correct"] is True and rec["stats"]["closed_reason"] is None
    # the wrong guess was explored too and sits below its sibling
    by_text = {n["text"]: n for n in rec["nodes"]}
    wrong = by_text["The answer is 8\n"]
    assert wrong["outcome"] == -1 and wrong["correct"] is False
    good, guess = by_text["Add 3 and 4 to get 7.\n"], by_text["Guess.\n"]
    assert good["Q"] > guess["Q"] and good["N"] > guess["N"]
    # node values: C = 0.5 everywhere, so v = 0.5 (+1 / -1 at terminals) and r = v - v(parent)
    assert wrong["value"] == pytest.approx(-0.5) and wrong["reward"] == pytest.approx(-1.0)
    assert leaf["value"] == pytest.approx(1.5) and leaf["reward"] == pytest.approx(1.0)


def test_q_ranks_siblings():
    script = {
        "": ["Plan A.\n", "Plan B.\n", "Plan C.\n"],
        "Plan A.\n": ["The answer is 9\n"],  # right
        "Plan B.\n": ["The answer is 9\n", "The answer is 1\n"],  # right half the time
        "Plan C.\n": ["The answer is 1\n"],  # wrong
    }
    [rec] = _run(ScriptedBackend(script), [P1], iterations=4, children=2, root_children=3, c_puct=2.0)
    q = {n["text"]: n["Q"] for n in rec["nodes"] if n["depth"] == 1}
    # v(step) = 0.5, v(answer) = 0.5 +- 1, root v = 0; r(step) = 0.5, r(answer) = +-1:
    # Q(A) = 0.5 + 1 = 1.5, Q(C) = 0.5 - 1 = -0.5, and Q(B) = 0.5 + the visit-weighted mean of +1 / -1
    assert q["Plan A.\n"] == pytest.approx(1.5)
    assert q["Plan C.\n"] == pytest.approx(-0.5)
    b_answers = [n for n in rec["nodes"] if n["parent"] is not None and rec["nodes"][n["parent"]]["text"] == "Plan B.\n"]
    n_right, n_wrong = (sum(max(1, n["N"]) for n in b_answers if n["correct"] is ok) for ok in (True, False))
    assert q["Plan B.\n"] == pytest.approx(0.5 + (n_right - n_wrong) / (n_right + n_wrong))
    assert q["Plan A.\n"] > q["Plan B.\n"] > q["Plan C.\n"]
    assert _texts(rec)[1] == "Plan A.\n"


def test_duplicates_dropped_but_their_tokens_counted():
    script = {"": ["Same.\n", "Same.\n", "Other.\n"], "Same.\n": ["The answer is 9\n"], "Other.\n": ["The answer is 9\n"]}
    backend = ScriptedBackend(script)
    [rec] = _run(backend, [P1], iterations=1, children=1, root_children=3, resample_duplicates=0)
    root_children = [n["text"] for n in rec["nodes"] if n["parent"] == 0]
    assert root_children == ["Same.\n", "Other.\n"]
    assert [n["draws"] for n in rec["nodes"] if n["parent"] == 0] == [2, 1]
    # tokens: root expansion 1 + 1 + 1 (the duplicate too), then one "The answer is 9" (4) per expansion
    n_expansions = sum(len(prefixes) for prefixes, _, _ in backend.expand_calls)
    assert rec["stats"]["tokens"] == 3 + 4 * (n_expansions - 1)


def test_max_depth_forces_a_terminal_and_closes():
    backend = ScriptedBackend({}, default=["more\n", "again\n"])  # never answers
    [rec] = _run(backend, [P1], iterations=1, children=2, root_children=2, depth_limit=2, max_depth=3)
    validate(rec, "tree")
    leaf = rec["nodes"][rec["path"][-1]]
    assert len(rec["path"]) == 4 and leaf["depth"] == 3
    assert leaf["terminal"] and leaf["outcome"] == -1 and leaf["correct"] is False and leaf["finish"] == "max_depth"
    assert rec["correct"] is False and rec["stats"]["closed_reason"] == "max_depth"
    assert max(n["depth"] for n in rec["nodes"]) == 3
    assert all(n["terminal"] for n in rec["nodes"] if n["depth"] == 3)


def test_token_budget_closes_the_tree_and_keeps_it():
    backend = ScriptedBackend({}, default=["one more step\n"])  # 3 tokens per step
    [rec] = _run(backend, [P1], iterations=5, children=1, root_children=1, max_tokens_per_tree=7)
    validate(rec, "tree")
    # expansions stop once 7 tokens are spent: 3 + 3 + 3 = 9 >= 7 after the third
    assert rec["stats"]["tokens"] == 9 and rec["stats"]["closed_reason"] == "token_budget"
    assert rec["correct"] is False
    # the committed path follows the commit rule through what was searched: root and 3 chained steps
    assert rec["path"] == [0, 1, 2, 3]


def test_trees_batch_into_one_call_per_round():
    problems = [dict(P1, id=f"p{i}", question=f"What is 3 + 4 + 2? (copy {i})") for i in range(3)]
    batched, single = ScriptedBackend(SCRIPT), ScriptedBackend(SCRIPT)
    recs = _run(batched, problems, batch_trees=3, **SMALL)
    alone = _run(single, problems, batch_trees=1, **SMALL)
    # the first call expands all three roots together; no call carries more than batch_trees prefixes
    assert len(batched.expand_calls[0][0]) == 3 and batched.expand_calls[0][1] == [2, 2, 2]
    assert max(len(p) for p, _, _ in batched.expand_calls) == 3
    assert max(len(p) for p, _, _ in single.expand_calls) == 1
    assert len(batched.expand_calls) * 3 == len(single.expand_calls)
    assert len(batched.self_eval_calls) * 3 == len(single.self_eval_calls)
    # one round = one expand + one self-evaluate call, seeds differ per round
    seeds = [s for _, _, s in batched.expand_calls]
    assert seeds == list(range(len(seeds)))
    # this backend ignores seeds, so batching must not change any tree
    strip = lambda r: {k: v for k, v in r.items() if k not in ("stats", "config")}
    assert sorted(map(json.dumps, map(strip, recs))) == sorted(map(json.dumps, map(strip, alone)))
    assert recs[0]["stats"]["expand_calls"] == recs[0]["stats"]["self_eval_calls"]
    assert recs[0]["stats"]["forward_calls"] == 2 * recs[0]["stats"]["expand_calls"]


def test_each_finished_tree_is_released_once():
    """The driver tells the backend (Backend.release) when each tree is done, with the tree's prompt."""

    class Recording(ScriptedBackend):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.released: list[str] = []

        def release(self, prompt):
            self.released.append(prompt)

    backend = Recording(SCRIPT)
    problems = [dict(P1, id=f"p{i}", question=f"What is 3 + 4 + 2? (copy {i})") for i in range(3)]
    recs = _run(backend, problems, batch_trees=2, **SMALL)
    assert sorted(backend.released) == sorted(r["prompt"] for r in recs) and len(set(backend.released)) == 3


def test_trees_share_the_rounds_wall_time():
    """Per-tree wall_s overlap (trees are in flight together); wall_share_s splits each driver round
    among the trees in it, so it sums to the search's own time."""

    class Slow(ScriptedBackend):
        def expand(self, *a, **kw):
            time.sleep(0.02)
            return super().expand(*a, **kw)

    problems = [dict(P1, id=f"p{i}", question=f"What is 3 + 4 + 2? (copy {i})") for i in range(5)]
    start = time.perf_counter()
    recs = _run(Slow(SCRIPT), problems, batch_trees=3, **SMALL)
    elapsed = time.perf_counter() - start
    shares = [r["stats"]["wall_share_s"] for r in recs]
    assert all(s > 0 for s in shares)
    assert 0.9 * elapsed <= sum(shares) <= elapsed + 1e-3
    assert sum(r["stats"]["wall_s"] for r in recs) > 1.5 * sum(shares)  # the overlap wall_s would count


def test_record_shape_and_determinism():
    [rec] = _run(ScriptedBackend(SCRIPT), [P1], seed=7, **SMALL)
    validate(rec, "tree")
    assert rec["problem_id"] == "p1" and rec["answer"] == "9" and rec["task"] == "math" and "choices" not in rec
    assert rec["prompt"] == "Q: What is 3 + 4 + 2?\nA:\n" and rec["policy"] == "scripted"
    assert rec["config"] == asdict(Config(seed=7, **SMALL))
    assert [n["id"] for n in rec["nodes"]] == list(range(len(rec["nodes"])))
    assert all("token_ids" not in n for n in rec["nodes"])
    assert set(rec["stats"]) >= {"tokens", "expand_calls", "self_eval_calls", "forward_calls", "wall_s", "closed_reason"}
    backend = ScriptedBackend(SCRIPT)
    [again] = _run(backend, [P1], seed=7, **SMALL)
    assert backend.expand_calls[0][2] == 7 * 1_000_003
    for r in (rec, again):
        r["stats"].pop("wall_s"), r["stats"].pop("wall_share_s")
    assert rec == again


def test_outcome_only_value_makes_no_self_eval_calls():
    backend = ScriptedBackend(SCRIPT)
    [rec] = _run(backend, [P1], value="outcome", **SMALL)
    assert backend.self_eval_calls == [] and rec["stats"]["self_eval_calls"] == 0
    by_text = {n["text"]: n for n in rec["nodes"]}
    # v = 0 for steps, +1 for the right answer, -1 for the wrong one
    assert by_text["Guess.\n"]["value"] == 0.0 and by_text["Guess.\n"]["self_eval"] is None
    assert by_text["The answer is 9\n"]["value"] == 1.0 and by_text["The answer is 8\n"]["value"] == -1.0
    assert by_text["Guess.\n"]["values"] == {"outcome": 0.0}
    assert rec["correct"] is True


def test_config_fails_loudly():
    with pytest.raises(MctsPrefError, match="--children must be >= 1"):
        Config(children=0)
    with pytest.raises(MctsPrefError, match="--top-p"):
        Config(top_p=0)


# -- CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch, tmp_path, backend_registry):
    """Problems file + a scripted backend registered as ``--backend scripted``; returns (runner, paths, loads)."""
    problems = tmp_path / "problems.jsonl"
    p2 = dict(P1, id="p2", question="What is 1 + 1?", answer="2")
    problems.write_text("".join(json.dumps(p) + "\n" for p in (P1, p2)))
    script = dict(SCRIPT, **{"": SCRIPT[""] + ["The answer is 2\n"]})
    loads = []

    def fake_load(spec, shots):
        loads.append(dict(vars(spec), shots=shots))
        return ScriptedBackend(script)

    backend_registry("scripted", fake_load)
    monkeypatch.setattr(mcts, "default_outcome", says_answer)
    return CliRunner(), problems, tmp_path / "trees.jsonl", loads


def test_cli_search_writes_records_and_resumes(cli):
    runner, problems, out, loads = cli
    args = ["search", str(problems), "--backend", "scripted", "--out", str(out), "--iterations", "1", "--children", "1",
            "--root-children", "3"]
    res = runner.invoke(app, args + ["--limit", "1"])
    assert res.exit_code == 0, res.output
    assert [r["problem_id"] for r in read_records(out, "tree")] == ["p1"]
    assert loads[0]["model"] == "default" and loads[0]["prompt_format"] == "auto"

    res = runner.invoke(app, args)  # resume: only p2 is new
    assert res.exit_code == 0, res.output
    recs = read_records(out, "tree")
    assert [r["problem_id"] for r in recs] == ["p1", "p2"]
    assert recs[1]["config"]["iterations"] == 1 and recs[1]["config"]["root_children"] == 3

    res = runner.invoke(app, args)  # all done: the model is not even loaded
    assert res.exit_code == 0 and len(loads) == 2 and "nothing to do" in res.output
    assert len(read_records(out, "tree")) == 2


def test_cli_search_bad_input_is_one_line(cli, tmp_path):
    runner, problems, out, loads = cli
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "question": "q"}\n')
    res = runner.invoke(app, ["search", str(bad), "--backend", "scripted"])
    assert res.exit_code == 2 and "missing required key 'answer'" in res.output and not loads
    res = runner.invoke(app, ["search", str(problems), "--backend", "scripted", "--depth-limit", "0"])
    assert res.exit_code == 2 and "--depth-limit must be >= 1" in res.output


def test_show_tree(cli):
    runner, problems, out, _ = cli
    runner.invoke(app, ["search", str(problems), "--backend", "scripted", "--out", str(out), "--iterations", "1",
                        "--root-children", "2", "--c-puct", "3"])
    res = runner.invoke(app, ["show-tree", str(out), "--id", "p1"])
    assert res.exit_code == 0, res.output
    assert "The answer is 9" in res.output and "✓" in res.output and "✗" in res.output and "Q=" in res.output
    res = runner.invoke(app, ["show-tree", str(out), "--id", "nope"])
    assert res.exit_code == 2 and "available ids: p1, p2" in res.output
    res = runner.invoke(app, ["show-tree", str(out)])
    assert res.exit_code == 2 and "pass --id" in res.output


# -- the real transformers backend on a tiny random model (mechanics, not quality) -----------


def test_real_backend_trees_are_reproducible(tiny_model_dir):
    from mcts_pref.backends import load_backend

    backend = load_backend(PolicySpec(model=str(tiny_model_dir), prompt_format="plain", shots=0))
    problems = [P1, dict(P1, id="p2", question="What is 5 + 1?", answer="6")]
    # top_p = 1 skips the nucleus sort over the whole vocabulary: the slow part on a CPU
    cfg = dict(iterations=1, children=2, root_children=2, depth_limit=2, max_depth=2, max_step_tokens=6, top_p=1.0, seed=3)

    def run() -> list[dict]:
        recs = sorted(search_trees(backend, problems, Config(**cfg)), key=lambda r: r["problem_id"])
        for r in recs:
            validate(r, "tree")
            r["stats"].pop("wall_s"), r["stats"].pop("wall_share_s")
        return recs

    first = run()
    assert [r["problem_id"] for r in first] == ["p1", "p2"]
    for rec in first:
        leaf = rec["nodes"][rec["path"][-1]]
        assert leaf["terminal"] and leaf["depth"] <= 2
        assert rec["stats"]["tokens"] >= sum(n["n_tokens"] for n in rec["nodes"]) > 0  # >: duplicates dropped
        assert all(0.0 <= n["self_eval"] <= 1.0 for n in rec["nodes"][1:])
    assert run() == first  # same seed, same batch: same trees


# -- end to end with the bundled SmolLM2 (slow) ------------------------------------------------


@pytest.fixture(scope="module")
def killed_then_resumed(tmp_path_factory, default_model_dir):
    """Run `mcts-pref search` on 2 easy problems, kill it once the first tree is written, rerun it.

    Returns (file text at the kill, file text after the rerun, the rerun's stderr).
    """
    tmp = tmp_path_factory.mktemp("search-e2e")
    problems = tmp / "problems.jsonl"
    problems.write_text("".join(json.dumps(p) + "\n" for p in (P1, dict(P1, id="p2", question="What is 5 + 1 + 2?", answer="8"))))
    out = tmp / "trees.jsonl"
    exe = Path(sys.executable).with_name("mcts-pref")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mcts_pref"]
    cmd += ["search", str(problems), "--model", "default", "--iterations", "1", "--children", "2",
            "--root-children", "2", "--max-depth", "3", "--max-step-tokens", "24", "--batch-trees", "1", "--out", str(out)]
    with open(tmp / "first.err", "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.2)
        proc.kill()
        proc.wait()
    at_kill = out.read_text() if out.exists() else ""
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    return at_kill, out.read_text(), rerun.stderr


@pytest.mark.slow
def test_e2e_search_writes_real_trees(killed_then_resumed):
    _, final, _ = killed_then_resumed
    recs = [json.loads(line) for line in final.splitlines()]
    assert sorted(r["problem_id"] for r in recs) == ["p1", "p2"]
    n_children = []
    for rec in recs:
        validate(rec, "tree")
        assert rec["policy"] == "default" and rec["config"]["root_children"] == 2
        leaf = rec["nodes"][rec["path"][-1]]
        assert leaf["terminal"] and leaf["depth"] <= 3 and isinstance(rec["correct"], bool)
        for node in rec["nodes"]:
            if not node["terminal"]:
                n_children.append(sum(1 for n in rec["nodes"] if n["parent"] == node["id"]))
    assert max(n_children) >= 2  # the search branched somewhere


@pytest.mark.slow
def test_e2e_resume_after_kill(killed_then_resumed):
    at_kill, final, stderr = killed_then_resumed
    first = at_kill.splitlines()
    assert len(first) == 1, "the run was killed after its first tree"
    assert final.startswith(at_kill) and final.endswith("\n")  # the written tree is kept as it was
    ids = [json.loads(line)["problem_id"] for line in final.splitlines()]  # every line whole JSON
    assert len(ids) == 2 and len(set(ids)) == 2
    assert "resuming, 1 of 2" in stderr


# -- value terms, distinct siblings, commit-time statistics (issue: step values) ------------------


def test_rollouts_batch_across_trees_and_give_mean_outcomes():
    # Two trees; each root child gets K = 2 rollouts. "Add 3 and 4 to get 7.\n" finishes right once in
    # two completions; "Guess.\n" never does.
    problems = [P1, dict(P1, id="p2", question="What is 3 + 4 + 2? (again)")]
    completions = {"Add 3 and 4 to get 7.\n": ["Then 7 + 2 = 9.\nThe answer is 9", "The answer is 8"],
                   "Guess.\n": ["The answer is 8"]}
    backend = ScriptedBackend(SCRIPT, completions=completions)
    recs = _run(backend, problems, value="outcome,rollout", rollouts=2, batch_trees=2, **SMALL)
    # the first rollout call holds the root children of both trees, K each: one call per round
    prefixes, n = backend.complete_calls[0]
    assert len(prefixes) == 4 and n == [2, 2, 2, 2]
    assert len({p.split("\nA:\n")[0] for p in prefixes}) == 2
    for rec in recs:
        by_text = {n["text"]: n for n in rec["nodes"]}
        add, guess = by_text["Add 3 and 4 to get 7.\n"], by_text["Guess.\n"]
        assert add["values"] == {"outcome": 0.0, "rollout": 0.0} and add["rollouts"] == 2  # (+1 - 1) / 2
        assert guess["values"]["rollout"] == -1.0 and guess["value"] == -1.0
        answer = by_text["The answer is 9\n"]
        assert answer["values"] == {"outcome": 1.0, "rollout": 1.0} and answer["rollouts"] == 0  # terminal: its own O
        st = rec["stats"]
        assert st["rollout_tokens"] == sum(n["rollout_tokens"] for n in rec["nodes"]) > 0
        assert st["tokens"] == st["expand_tokens"] + st["rollout_tokens"]
        assert st["rollouts"] == sum(n["rollouts"] for n in rec["nodes"])
        assert st["forward_calls"] == st["expand_calls"] + st["rollout_calls"]


def test_rollout_early_stop_stops_at_the_first_success():
    completions = {"Add 3 and 4 to get 7.\n": ["The answer is 8", "The answer is 9", "The answer is 8"],
                   "Guess.\n": ["The answer is 8"]}
    backend = ScriptedBackend(SCRIPT, completions=completions)
    [rec] = _run(backend, [P1], value="outcome,rollout", rollouts=8, rollout_early_stop=True, **SMALL)
    by_text = {n["text"]: n for n in rec["nodes"]}
    # waves of 8 // 4 = 2: "Add" succeeds in its first wave (8, then 9) -> +1 after 2 rollouts;
    # "Guess" never succeeds -> -1 after all 8
    assert by_text["Add 3 and 4 to get 7.\n"]["rollouts"] == 2 and by_text["Add 3 and 4 to get 7.\n"]["values"]["rollout"] == 1.0
    assert by_text["Guess.\n"]["rollouts"] == 8 and by_text["Guess.\n"]["values"]["rollout"] == -1.0
    assert [n for _, n in backend.complete_calls][:4] == [[2, 2], [2], [2], [2]]


def test_checker_terms_follow_the_path():
    good = {"": ["3 + 4 = 7\n"], "3 + 4 = 7\n": ["7 + 2 = 9\n"], "3 + 4 = 7\n7 + 2 = 9\n": ["The answer is 9\n"]}
    bad = {"": ["3 + 4 = 8\n"], "3 + 4 = 8\n": ["8 + 2 = 10\n"], "3 + 4 = 8\n8 + 2 = 10\n": ["The answer is 10\n"]}
    cfg = dict(value="outcome,checker,checker-gate", iterations=1, children=1, root_children=1, depth_limit=4,
               max_depth=6, resample_duplicates=0)
    [right] = _run(ScriptedBackend(good), [P1], **cfg)
    [wrong] = _run(ScriptedBackend(bad), [P1], **cfg)
    r = {n["text"]: n for n in right["nodes"]}
    w = {n["text"]: n for n in wrong["nodes"]}
    assert r["3 + 4 = 7\n"]["check"] == "ok" and w["3 + 4 = 8\n"]["check"] == "bad"
    assert r["3 + 4 = 7\n"]["values"] == {"outcome": 0.0, "checker": 1.0, "checker_gate": 0.0}
    assert w["3 + 4 = 8\n"]["values"] == {"outcome": 0.0, "checker": -1.0, "checker_gate": -1.0}
    # 8 + 2 = 10 is true arithmetic: the path sum goes back to 0 but the gate stays shut
    assert w["8 + 2 = 10\n"]["values"] == {"outcome": 0.0, "checker": 0.0, "checker_gate": -1.0}
    assert r["7 + 2 = 9\n"]["values"]["checker"] == 2.0
    # v(right answer) = +1 outcome + 2 checker + 0 gate; v(wrong) = -1 + 0 - 1
    assert r["The answer is 9\n"]["value"] == 3.0 and w["The answer is 10\n"]["value"] == -2.0


def test_commit_time_statistics_are_recorded():
    [rec] = _run(ScriptedBackend(SCRIPT), [P1], **SMALL)
    nodes = rec["nodes"]
    for parent in rec["path"][:-1]:  # every committed node's children carry the stats of that moment
        kids = [n for n in nodes if n["parent"] == parent]
        assert all(n["commit_N"] is not None and n["commit_Q"] is not None for n in kids)
    committed = nodes[rec["path"][1]]
    assert committed["N"] >= committed["commit_N"]
    assert all(n["commit_Q"] is None for n in nodes if n["parent"] is not None and n["parent"] not in rec["path"])


class CategoricalBackend:
    """Samples each step from a fixed distribution: the policy the distinct-sibling law is checked against."""

    policy_id = "categorical"

    def __init__(self, probs: dict[str, float], seed: int = 0):
        import random

        self.texts, self.weights = list(probs), list(probs.values())
        self.rng = random.Random(seed)

    def draw(self) -> Step:
        t = self.rng.choices(self.texts, self.weights)[0]
        return Step(text=t, token_ids=[1], logprob=math.log(self.weights[self.texts.index(t)]), finish=STEP)


@pytest.mark.parametrize("staged", [False, True])
def test_resampling_duplicates_samples_siblings_without_replacement(staged):
    """Two distinct children of {A .6, B .3, C .1} must follow sampling without replacement,
    whether the first round draws both (i.i.d.) or one (staged: the rest come in later rounds).

    P({A,B}) = .6 * .3/.4 + .3 * .6/.7 = .7071;  P({A,C}) = .6 * .1/.4 + .1 * .6/.9 = .2167;
    P({B,C}) = .3 * .1/.7 + .1 * .3/.9 = .0762.
    """
    from collections import Counter

    from mcts_pref.mcts import _expand
    from mcts_pref.tree import Node

    backend = CategoricalBackend({"A\n": 0.6, "B\n": 0.3, "C\n": 0.1}, seed=1)
    cfg = Config(root_children=2, value="outcome", resample_duplicates=20)
    sets, draws = Counter(), 0
    trials = 6000
    for _ in range(trials):
        nodes = [Node(id=0, parent=None, depth=0)]
        stats = mcts.new_stats()
        gen = _expand(nodes, 0, P1, "Q\n", cfg, lambda c, p: False, stats, staged)
        req = next(gen)
        assert req.n == (1 if staged else 2)
        try:
            while True:
                req = gen.send([backend.draw() for _ in range(req.n)])
        except StopIteration:
            pass
        sets[frozenset(n.text for n in nodes[1:])] += 1
        draws += sum(n.draws for n in nodes[1:])
        assert len(nodes) == 3
        assert all(n.prior == pytest.approx(backend.weights[backend.texts.index(n.text)]) for n in nodes[1:])
    expect = {frozenset({"A\n", "B\n"}): 0.7071, frozenset({"A\n", "C\n"}): 0.2167, frozenset({"B\n", "C\n"}): 0.0762}
    for s, p in expect.items():
        sd = math.sqrt(p * (1 - p) / trials)
        assert abs(sets[s] / trials - p) < 4 * sd, (s, sets[s] / trials, p)
    assert draws > 2 * trials  # duplicates were drawn, counted on the child they repeat


def test_staging_needs_resampling():
    """Without resample rounds there is nothing to stage: the one round draws all k children."""
    from mcts_pref.mcts import _expand
    from mcts_pref.tree import Node

    backend = CategoricalBackend({"A\n": 0.6, "B\n": 0.4}, seed=3)
    nodes = [Node(id=0, parent=None, depth=0)]
    gen = _expand(nodes, 0, P1, "Q\n", Config(root_children=4, value="outcome", resample_duplicates=0),
                  lambda c, p: False, mcts.new_stats(), True)
    req = next(gen)
    assert req.n == 4
    with pytest.raises(StopIteration):
        gen.send([backend.draw() for _ in range(req.n)])


def test_cli_value_options(cli):
    runner, problems, out, loads = cli
    base = ["search", str(problems), "--backend", "scripted", "--iterations", "1"]
    res = runner.invoke(app, base + ["--value", "outcome,luck=2"])
    assert res.exit_code == 2 and "unknown value term 'luck'" in res.output and not loads
    res = runner.invoke(app, base + ["--value", "self-eval", "--no-self-eval"])
    assert res.exit_code == 2 and "leaves no value terms" in res.output
    res = runner.invoke(app, base + ["--no-self-eval", "--out", str(out)])
    assert res.exit_code == 0, res.output
    recs = read_records(out, "tree")
    assert recs[0]["config"]["weights"] == {"outcome": 1.0} and "distinct children each" in res.output


@pytest.mark.slow
def test_e2e_process_values_on_smollm2(tmp_path, default_model_dir):
    """A real search with outcome + checker + rollout values, through the CLI, on 2 problems."""
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps(p) + "\n" for p in (
        dict(P1, source="gym:chain_sum", question="State the final answer to the following arithmetic problem: 3 + 4 + 2 ="),
        dict(P1, id="p2", source="gym:chain_sum", answer="8",
             question="State the final answer to the following arithmetic problem: 5 + 1 + 2 ="))))
    out = tmp_path / "trees.jsonl"
    res = CliRunner().invoke(app, [
        "search", str(problems), "--model", "default", "--value", "outcome,checker,rollout", "--rollouts", "2",
        "--iterations", "1", "--children", "2", "--root-children", "2", "--max-depth", "4", "--max-step-tokens", "24",
        "--rollout-max-tokens", "48", "--out", str(out)])
    assert res.exit_code == 0, res.output
    recs = read_records(out, "tree")
    assert sorted(r["problem_id"] for r in recs) == ["p1", "p2"]
    for rec in recs:
        assert rec["source"] == "gym:chain_sum" and rec["config"]["weights"] == {"outcome": 1.0, "checker": 1.0, "rollout": 1.0}
        st = rec["stats"]
        assert st["rollout_tokens"] > 0 and st["tokens"] == st["expand_tokens"] + st["rollout_tokens"]
        for n in rec["nodes"][1:]:
            assert set(n["values"]) == {"outcome", "checker", "rollout"} and n["check"] in ("ok", "bad", "unknown")
            assert -1.0 <= n["values"]["rollout"] <= 1.0
            assert n["value"] == pytest.approx(sum(n["values"].values()))
            if not n["terminal"]:
                assert n["rollouts"] == 2
