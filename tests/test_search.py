"""The batched search driver and its CLI, on a scripted backend (no model)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcts_pref import search
from mcts_pref.backend import ANSWER, STEP, Step
from mcts_pref.cli import app
from mcts_pref.records import MctsPrefError, read_records, validate
from mcts_pref.search import Config, search_trees


class ScriptedBackend:
    """Answers expansions from ``script``: partial solution -> candidate steps, handed out in order.

    A partial not in the script gets ``default`` (cycled). A step containing
    "The answer is" ends with ANSWER (terminal); its log-prob is -0.5 per
    whitespace-separated token. ``evals`` maps a partial solution to its
    self-evaluation C (0.5 when absent). Every call is logged.
    """

    policy_id = "scripted"

    def __init__(self, script: dict[str, list[str]], evals: dict[str, float] | None = None, default=("more\n",)):
        self.script, self.evals, self.default = script, evals or {}, list(default)
        self.expand_calls: list[tuple[list[str], list[int], int | None]] = []
        self.self_eval_calls: list[list[str]] = []

    def format_prompt(self, problem: dict) -> str:
        return f"Q: {problem['question']}\nA:\n"

    def expand(self, prefixes, n, *, temperature, top_p, max_step_tokens, seed=None):
        self.expand_calls.append((list(prefixes), list(n), seed))
        out = []
        for prefix, k in zip(prefixes, n):
            partial = prefix.split("\nA:\n", 1)[1]
            cands = self.script.get(partial, self.default)
            out.append([_step(cands[j % len(cands)]) for j in range(k)])
        return out

    def self_evaluate(self, questions, partials):
        self.self_eval_calls.append(list(partials))
        return [self.evals.get(p, 0.5) for p in partials]


def _step(text: str) -> Step:
    toks = list(range(len(text.split())))
    return Step(text=text, token_ids=toks, logprob=-0.5 * len(toks), finish=ANSWER if "The answer is" in text else STEP)


def says_answer(completion: str, problem: dict) -> bool:
    return f"The answer is {problem['answer']}" in completion


P1 = {"id": "p1", "question": "What is 3 + 4 + 2?", "answer": "9", "task": "math"}
SCRIPT = {
    "": ["Add 3 and 4 to get 7.\n", "Guess.\n"],
    "Add 3 and 4 to get 7.\n": ["Then 7 + 2 = 9.\n"],
    "Add 3 and 4 to get 7.\nThen 7 + 2 = 9.\n": ["The answer is 9\n"],
    "Guess.\n": ["The answer is 8\n"],
}
SMALL = dict(iterations=2, children=1, root_children=2, depth_limit=4, max_depth=6)


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
    [rec] = _run(backend, [P1], iterations=1, children=1, root_children=3)
    root_children = [n["text"] for n in rec["nodes"] if n["parent"] == 0]
    assert root_children == ["Same.\n", "Other.\n"]
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
    rec["stats"].pop("wall_s"), again["stats"].pop("wall_s")
    assert rec == again


def test_self_eval_off_uses_c_equals_one():
    backend = ScriptedBackend(SCRIPT)
    [rec] = _run(backend, [P1], self_eval=False, **SMALL)
    assert backend.self_eval_calls == [] and rec["stats"]["self_eval_calls"] == 0
    by_text = {n["text"]: n for n in rec["nodes"]}
    # v = 1 for steps, 1 + 1 = 2 for the right answer, 1 - 1 = 0 for the wrong one
    assert by_text["Guess.\n"]["value"] == 1.0 and by_text["Guess.\n"]["self_eval"] is None
    assert by_text["The answer is 9\n"]["value"] == 2.0 and by_text["The answer is 8\n"]["value"] == 0.0
    assert rec["correct"] is True


def test_config_fails_loudly():
    with pytest.raises(MctsPrefError, match="--children must be >= 1"):
        Config(children=0)
    with pytest.raises(MctsPrefError, match="--top-p"):
        Config(top_p=0)


# -- CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """Problems file + a scripted backend behind the CLI's loading hook; returns (runner, paths, loads)."""
    problems = tmp_path / "problems.jsonl"
    p2 = dict(P1, id="p2", question="What is 1 + 1?", answer="2")
    problems.write_text("".join(json.dumps(p) + "\n" for p in (P1, p2)))
    script = dict(SCRIPT, **{"": SCRIPT[""] + ["The answer is 2\n"]})
    loads = []

    def fake_load(**kwargs):
        loads.append(kwargs)
        return ScriptedBackend(script)

    monkeypatch.setattr(search, "_load_backend", fake_load)
    monkeypatch.setattr(search, "default_outcome", says_answer)
    return CliRunner(), problems, tmp_path / "trees.jsonl", loads


def test_cli_search_writes_records_and_resumes(cli):
    runner, problems, out, loads = cli
    args = ["search", str(problems), "--out", str(out), "--iterations", "1", "--children", "1", "--root-children", "3"]
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
    res = runner.invoke(app, ["search", str(bad)])
    assert res.exit_code == 2 and "missing required key 'answer'" in res.output and not loads
    res = runner.invoke(app, ["search", str(problems), "--depth-limit", "0"])
    assert res.exit_code == 2 and "--depth-limit must be >= 1" in res.output


def test_show_tree(cli):
    runner, problems, out, _ = cli
    runner.invoke(app, ["search", str(problems), "--out", str(out), "--iterations", "1", "--root-children", "2", "--c-puct", "3"])
    res = runner.invoke(app, ["show-tree", str(out), "--id", "p1"])
    assert res.exit_code == 0, res.output
    assert "The answer is 9" in res.output and "✓" in res.output and "✗" in res.output and "Q=" in res.output
    res = runner.invoke(app, ["show-tree", str(out), "--id", "nope"])
    assert res.exit_code == 2 and "available ids: p1, p2" in res.output
    res = runner.invoke(app, ["show-tree", str(out)])
    assert res.exit_code == 2 and "pass --id" in res.output


# -- the real transformers backend on a tiny random model (mechanics, not quality) -----------


def test_real_backend_trees_are_reproducible(tiny_model_dir):
    from mcts_pref.policy import load_backend

    backend = load_backend(str(tiny_model_dir), prompt_format="plain", shots=[])
    problems = [P1, dict(P1, id="p2", question="What is 5 + 1?", answer="6")]
    # top_p = 1 skips the nucleus sort over the whole vocabulary: the slow part on a CPU
    cfg = dict(iterations=1, children=2, root_children=2, depth_limit=2, max_depth=2, max_step_tokens=6, top_p=1.0, seed=3)

    def run() -> list[dict]:
        recs = sorted(search_trees(backend, problems, Config(**cfg)), key=lambda r: r["problem_id"])
        for r in recs:
            validate(r, "tree")
            r["stats"].pop("wall_s")
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
