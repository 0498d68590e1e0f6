#!/usr/bin/env bash
# A first look on the bundled model: greedy accuracy on 32 three-term chain sums.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
RUN=${RUN:-runs/demo}
mkdir -p "$RUN"
mcts-pref prepare gym:chain_sum --size 32 --seed 1000 \
  --config min_terms=3 --config max_terms=3 --config min_digits=1 --config max_digits=1 --out "$RUN/test.jsonl"
mcts-pref sample "$RUN/test.jsonl" --out "$RUN/samples.jsonl"
mcts-pref evaluate "$RUN/samples.jsonl" --out "$RUN/scored.jsonl" --report "$RUN/report.json"
