"""The loop script end to end at its smallest size, on the real bundled SmolLM2 (slow)."""

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
               EPOCHS="1", TREES="--all-trees", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
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
    assert pairs, "an --all-trees search of 3 problems should give at least one pair"
    assert (run / "round-1" / "adapter" / "adapter_model.safetensors").exists()
    assert "round-1" in proc.stdout and "MCTS-DPO run" in proc.stdout  # the closing report table
    # Rerunning a finished run redoes nothing and prints the table again.
    again = subprocess.run(["bash", str(script)], cwd=run_root, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "train-dpo" not in again.stderr and "nothing to do" in again.stderr
