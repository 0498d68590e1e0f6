"""experiments/tree_vs_alternatives: analyze.py on the committed outcome files reproduces the README's tables."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

EXP = REPO / "experiments" / "tree_vs_alternatives"


def run_analyze(folder):
    return subprocess.run([sys.executable, str(EXP / "analyze.py"), str(folder)], capture_output=True, text=True,
                          check=True, cwd=REPO).stdout


def test_readme_tables_are_what_analyze_prints_from_the_committed_files():
    if not list(EXP.glob("outcomes-*.jsonl")):
        pytest.skip("no outcomes committed yet")
    readme = (EXP / "README.md").read_text()
    block = readme.split("<!-- analyze.py -->\n", 1)[1].split("<!-- /analyze.py -->", 1)[0]
    assert block == run_analyze(EXP)


def test_committed_outcomes_have_the_contract_columns():
    files = list(EXP.glob("outcomes-*.jsonl"))
    if not files:
        pytest.skip("no outcomes committed yet")
    for f in files:
        assert f.stat().st_size < 1_000_000, f"{f.name}: over 1 MB, gzip it"
        for line in f.read_text().splitlines():
            r = json.loads(line)
            assert set(r) == {"arm", "seed", "round", "problem_id", "correct", "n_tokens"}
            assert isinstance(r["correct"], bool) and r["round"] in (0, 1, 2)


def test_analyze_on_hand_made_outcomes(tmp_path):
    # Two seeds, 4 problems each. Seed 0: b right on p0-p2, c on p0 -> b - c = +50 points (2 / 0 discordant).
    # Seed 1: b right on p0, c on p0-p1 -> -25 points (0 / 1). Mean over seeds +12.5 points.
    rows = []
    right = {("b", 0): 3, ("c", 0): 1, ("b", 1): 1, ("c", 1): 2, ("base", 0): 0, ("base", 1): 0}
    for (arm, seed), n in right.items():
        for rnd in ((0,) if arm == "base" else (1, 2)):
            rows += [{"arm": arm, "seed": seed, "round": rnd, "problem_id": f"p{i}", "correct": i < n, "n_tokens": 9}
                     for i in range(4)]
    (tmp_path / "outcomes-all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_analyze(tmp_path)
    assert "| b - c | 0 | 4 | 75.0% vs 25.0% | +50.0 " in out and "| 2 / 0 | 0.50 |" in out
    assert "| b - c | 1 | 4 | 25.0% vs 50.0% | -25.0 " in out and "| 0 / 1 | 1.00 |" in out
    # Seed level: mean +12.5, sd = 53.03 points, t(0.975, 1) = 12.706 -> half-width 12.706 * 53.03 / sqrt(2) = 476.5.
    assert "| b - c | 2 | +12.5 (-464.0 to +489.0) | 1 / 1 | 1.00 |" in out
