"""The loop script: its command sequence against a stand-in CLI (fast), and end to end at its
smallest size on real models (slow)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcts_pref.records import read_records

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_loop_script_one_round(tmp_path, default_model_dir):
    run_root = tmp_path / "repo"
    env = dict(os.environ, NAME="t", ROUNDS="1", N_TRAIN="3", N_TEST="4", ITERATIONS="1", CHILDREN="2",
               ROOT_CHILDREN="3", DEPTH_LIMIT="2", MAX_DEPTH="4", MAX_STEP_TOKENS="16", EVAL_TOKENS="32",
               EPOCHS="1", TREES="--all-trees", PAIRS="", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    # Run a copy of the script from a scratch dir so runs/ lands there, not in the repo.
    (run_root / "examples").mkdir(parents=True)
    script = run_root / "examples" / "mcts_dpo_loop.sh"
    script.write_text((REPO / "examples" / "mcts_dpo_loop.sh").read_text())
    proc = subprocess.run(["bash", str(script)], cwd=run_root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = run_root / "runs" / "t"
    read_records(run / "train.jsonl", "problem")
    read_records(run / "test.jsonl", "problem")
    for k in (0, 1):
        assert len(read_records(run / f"round-{k}" / "samples.jsonl", "sample")) == len(read_records(run / "test.jsonl"))
        assert json.loads((run / f"round-{k}" / "report.json").read_text())["n_samples"] > 0
    trees = read_records(run / "round-1" / "trees.jsonl", "tree")
    assert len(trees) == 3 and all(t["nodes"][t["path"][-1]]["terminal"] for t in trees)
    pairs = read_records(run / "round-1" / "pairs.jsonl", "pair")
    assert pairs, "an --all-trees search of 3 problems should give at least one pair (PAIRS='': no --checked)"
    assert (run / "round-1" / "adapter" / "adapter_model.safetensors").exists()
    assert "round-1" in proc.stdout and "MCTS-DPO run" in proc.stdout  # the closing report table
    # Rerunning a finished run redoes nothing and prints the table again.
    again = subprocess.run(["bash", str(script)], cwd=run_root, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "train-dpo" not in again.stderr and "nothing to do" in again.stderr


@pytest.mark.slow
def test_loop_script_curriculum_on_the_tiny_model(tmp_path, tiny_model_dir):
    """CURRICULUM=1 end to end: pool sampling, evaluate, curriculum, search on the kept problems, compute in report."""
    run_root = tmp_path / "repo"
    # BAND=0,1 keeps every pool problem (a random model solves none), so --limit N_TRAIN decides: the first 2.
    env = dict(os.environ, NAME="t", MODEL=str(tiny_model_dir), ROUNDS="1", N_TRAIN="2", N_TEST="3", CURRICULUM="1",
               POOL_FACTOR="2", POOL_K="2", POOL_TOKENS="8", BAND="0,1", ITERATIONS="1", CHILDREN="2",
               ROOT_CHILDREN="2", DEPTH_LIMIT="2", MAX_DEPTH="3", MAX_STEP_TOKENS="8", EVAL_TOKENS="8", EPOCHS="1",
               TREES="--all-trees", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    (run_root / "examples").mkdir(parents=True)
    script = run_root / "examples" / "mcts_dpo_loop.sh"
    script.write_text((REPO / "examples" / "mcts_dpo_loop.sh").read_text())
    proc = subprocess.run(["bash", str(script)], cwd=run_root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run, r1 = run_root / "runs" / "t", run_root / "runs" / "t" / "round-1"
    train = read_records(run / "train.jsonl", "problem")
    assert len(train) == 4  # POOL_FACTOR x N_TRAIN x ROUNDS
    pool = read_records(r1 / "pool_scored.jsonl", "sample")
    assert len(pool) == 4 * 2 and all(isinstance(s["correct"], bool) for s in pool)
    kept = read_records(r1 / "problems.jsonl", "problem")
    assert [p["id"] for p in kept] == [p["id"] for p in train[:2]] and all(p["pass_samples"] == 2 for p in kept)
    trees = read_records(r1 / "trees.jsonl", "tree")
    assert sorted(t["problem_id"] for t in trees) == sorted(p["id"] for p in kept)
    assert "curriculum: kept 2 of 4 sampled problems" in proc.stderr and "MCTS-DPO run" in proc.stdout
    rep = subprocess.run(["mcts-pref", "report", str(run), "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    row = next(r for r in json.loads(rep.stdout) if r["name"] == "round-1")
    assert row["curriculum_tokens"] == sum(s["n_tokens"] for s in pool) > 0
    assert row["search_tokens"] == sum(t["stats"]["tokens"] for t in trees) > 0


# ---------------------------------------------------------------- the script's commands, against a stand-in CLI

FAKE_CLI = r'''
import json, os, sys
from pathlib import Path

argv = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(argv) + "\n")
opt = lambda name: argv[argv.index(name) + 1] if name in argv else None
cmd, out = argv[0], opt("--out")
if cmd == "train-dpo":
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "adapter_model.safetensors").write_text("x")
elif out:
    n = 0 if cmd == "curriculum" and os.environ.get("FAKE_EMPTY_BAND") else int(opt("--size") or 1)
    Path(out).write_text("".join(json.dumps({"id": f"{opt('--seed')}-{i}", "question": f"q{opt('--seed')}-{i}"}) + "\n"
                                 for i in range(n)))
if opt("--report"):
    Path(opt("--report")).write_text("{}")
'''

CHAIN = ["--config", "min_terms=3", "--config", "max_terms=3", "--config", "min_digits=1", "--config", "max_digits=1"]
SHOTS = ["--shots", "2", "--shots-from", "runs/t/shots.jsonl"]
SEARCH = [*SHOTS, "--iterations", "3", "--children", "3", "--root-children", "5", "--depth-limit", "3",
          "--max-depth", "8", "--max-step-tokens", "24", "--temperature", "0.7", "--value", "outcome,checker-gate",
          "--rollouts", "4", "--resample-duplicates", "1"]
TRAIN = ["--lr", "2e-4", "--beta", "0.1", "--epochs", "2", "--lora-r", "8", "--seed", "0", "--save-every", "10", "--resume"]
# What the script runs without the curriculum (recorded from it with this stand-in, ROUNDS=2 N_TRAIN=3 N_TEST=4).
SHOTS_PREP = ["prepare", "gym:chain_sum", "--size", "2", "--seed", "424242", *CHAIN, "--out", "runs/t/shots.jsonl.tmp"]
TODAY = [
    SHOTS_PREP,
    ["prepare", "gym:chain_sum", "--size", "6", "--seed", "0", *CHAIN, "--out", "runs/t/train.jsonl.tmp"],
    ["prepare", "gym:chain_sum", "--size", "4", "--seed", "100000", *CHAIN, "--out", "runs/t/test.jsonl.tmp"],
    ["sample", "runs/t/test.jsonl", "--model", "default", *SHOTS, "--max-tokens", "96", "--seed", "0",
     "--out", "runs/t/round-0/samples.jsonl"],
    ["evaluate", "runs/t/round-0/samples.jsonl", "--out", "runs/t/round-0/scored.jsonl", "--report", "runs/t/round-0/report.json"],
    ["search", "runs/t/train.jsonl", "--shard", "0/2", "--model", "default", *SEARCH, "--seed", "1",
     "--out", "runs/t/round-1/trees.jsonl"],
    ["extract-pairs", "runs/t/round-1/trees.jsonl", "--min-margin", "0.0", "--only-correct-trees", "--checked", "--out", "runs/t/round-1/pairs.jsonl"],
    ["train-dpo", "runs/t/round-1/pairs.jsonl", "--model", "default", "--out", "runs/t/round-1/adapter", *TRAIN],
    ["sample", "runs/t/test.jsonl", "--model", "default", "--adapter", "runs/t/round-1/adapter", *SHOTS,
     "--max-tokens", "96", "--seed", "0", "--out", "runs/t/round-1/samples.jsonl"],
    ["evaluate", "runs/t/round-1/samples.jsonl", "--out", "runs/t/round-1/scored.jsonl", "--report", "runs/t/round-1/report.json"],
    ["search", "runs/t/train.jsonl", "--shard", "1/2", "--model", "default", "--adapter", "runs/t/round-1/adapter", *SEARCH,
     "--seed", "2", "--out", "runs/t/round-2/trees.jsonl"],
    ["extract-pairs", "runs/t/round-2/trees.jsonl", "--min-margin", "0.0", "--only-correct-trees", "--checked", "--out", "runs/t/round-2/pairs.jsonl"],
    ["train-dpo", "runs/t/round-2/pairs.jsonl", "--model", "default", "--adapter", "runs/t/round-1/adapter",
     "--out", "runs/t/round-2/adapter", *TRAIN],
    ["sample", "runs/t/test.jsonl", "--model", "default", "--adapter", "runs/t/round-2/adapter", *SHOTS,
     "--max-tokens", "96", "--seed", "0", "--out", "runs/t/round-2/samples.jsonl"],
    ["evaluate", "runs/t/round-2/samples.jsonl", "--out", "runs/t/round-2/scored.jsonl", "--report", "runs/t/round-2/report.json"],
    ["report", "runs/t"],
]


def run_with_fake_cli(root: Path, **knobs) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Run a copy of the loop script in ``root`` with the stand-in ``mcts-pref``; return it and the commands it ran."""
    (root / "examples").mkdir(parents=True, exist_ok=True)
    (root / "bin").mkdir(exist_ok=True)
    script = root / "examples" / "mcts_dpo_loop.sh"
    script.write_text((REPO / "examples" / "mcts_dpo_loop.sh").read_text())
    cli = root / "bin" / "mcts-pref"
    cli.write_text(f"#!{sys.executable}\n{FAKE_CLI}")
    cli.chmod(0o755)
    log = root / "log.jsonl"
    log.write_text("")
    env = {"PATH": f"{root / 'bin'}:{os.environ['PATH']}", "HOME": str(root), "FAKE_LOG": str(log),
           "NAME": "t", "ROUNDS": "2", "N_TRAIN": "3", "N_TEST": "4", **knobs}
    proc = subprocess.run(["bash", str(script)], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    return proc, [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.parametrize("curriculum", [None, "0"])
def test_loop_without_curriculum_runs_the_same_commands_as_before(tmp_path, curriculum):
    proc, ran = run_with_fake_cli(tmp_path, **({"CURRICULUM": curriculum} if curriculum else {}))
    assert proc.returncode == 0, proc.stderr
    assert ran == TODAY


def test_loop_curriculum_commands(tmp_path):
    proc, ran = run_with_fake_cli(tmp_path, CURRICULUM="1", POOL_FACTOR="2", POOL_K="3", BAND="0.2,0.8")
    assert proc.returncode == 0, proc.stderr
    assert ran[0] == SHOTS_PREP
    ran = ran[1:]
    assert ran[0][:4] == ["prepare", "gym:chain_sum", "--size", "12"]  # POOL_FACTOR x N_TRAIN per round
    assert ran[1:4] == TODAY[2:5]
    pool = ["runs/t/train.jsonl", "--shard", "0/2", "--model", "default", *SHOTS, "-k", "3", "--temperature", "0.7",
            "--max-tokens", "96", "--seed", "1", "--out", "runs/t/round-1/pool_samples.jsonl"]
    assert ran[4:8] == [
        ["sample", *pool],
        ["evaluate", "runs/t/round-1/pool_samples.jsonl", "--out", "runs/t/round-1/pool_scored.jsonl"],
        ["curriculum", "runs/t/round-1/pool_scored.jsonl", "--problems", "runs/t/train.jsonl", "--band", "0.2,0.8",
         "--limit", "3", "--out", "runs/t/round-1/problems.jsonl.tmp"],
        ["search", "runs/t/round-1/problems.jsonl", "--model", "default", *SEARCH, "--seed", "1",
         "--out", "runs/t/round-1/trees.jsonl"],
    ]
    assert ran[8:11] == TODAY[6:9]
    # Round 2 samples its own pool shard with round 1's policy.
    assert ran[12][:12] == ["sample", "runs/t/train.jsonl", "--shard", "1/2", "--model", "default", "--adapter",
                            "runs/t/round-1/adapter", *SHOTS]
    assert ran[15][:2] == ["search", "runs/t/round-2/problems.jsonl"] and ran[-1] == ["report", "runs/t"]
    # A rerun neither samples the pool nor picks problems again.
    proc, again = run_with_fake_cli(tmp_path, CURRICULUM="1", POOL_FACTOR="2", POOL_K="3", BAND="0.2,0.8")
    assert proc.returncode == 0, proc.stderr
    assert not any(c[0] == "curriculum" or "-k" in c for c in again)
    assert [c[1] for c in again if c[0] == "search"] == ["runs/t/round-1/problems.jsonl", "runs/t/round-2/problems.jsonl"]


def test_loop_curriculum_stops_when_no_problem_is_in_the_band(tmp_path):
    proc, ran = run_with_fake_cli(tmp_path, CURRICULUM="1", FAKE_EMPTY_BAND="1")
    assert proc.returncode == 0, proc.stderr
    assert "round 1: no pool problem has a pass rate in 0.1,0.9; stopping" in proc.stderr
    assert [c[0] for c in ran[-2:]] == ["curriculum", "report"] and not any(c[0] == "search" for c in ran)


def test_loop_rejects_an_unknown_curriculum_value(tmp_path):
    proc, ran = run_with_fake_cli(tmp_path, CURRICULUM="yes")
    assert proc.returncode == 2 and "CURRICULUM must be 1" in proc.stderr and ran == []
