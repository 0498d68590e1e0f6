#!/usr/bin/env bash
# Round-1 pair-rule variants on the trees run.sh already searched: --all-trees, --rejected random.
set -euo pipefail
cd "$(dirname "$0")/../.."; [ -d .venv ] && export PATH="$PWD/.venv/bin:$PATH"
RUN=runs/${NAME:-chain_sum_exp}
for v in all-trees rejected-random; do
  D=$RUN/x-round-1-$v; mkdir -p $D
  case $v in
    all-trees) mcts-pref extract-pairs $RUN/round-1/trees.jsonl --all-trees --out $D/pairs.jsonl ;;
    rejected-random) mcts-pref extract-pairs $RUN/round-1/trees.jsonl --rejected random --out $D/pairs.jsonl ;;
  esac
  mcts-pref train-dpo $D/pairs.jsonl --model default --out $D/adapter --lr 2e-4 --beta 0.1 --epochs 2 --resume
  mcts-pref sample $RUN/test.jsonl --adapter $D/adapter --max-tokens 96 --out $D/samples.jsonl
  mcts-pref evaluate $D/samples.jsonl --out $D/scored.jsonl --report $D/report.json
done
