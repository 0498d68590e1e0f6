#!/usr/bin/env bash
# Round-1 variants of the run in runs/$NAME (default chain_sum_exp):
#   all-trees, rejected-random: other pair rules on the trees run.sh already searched;
#   no-self-eval: a new round-1 search with outcome-only values (same knobs otherwise).
#   VARIANTS="no-self-eval" bash experiments/chain_sum/variants.sh     # just one
set -euo pipefail
cd "$(dirname "$0")/../.."; [ -d .venv ] && export PATH="$PWD/.venv/bin:$PATH"
RUN=runs/${NAME:-chain_sum_exp}
for v in ${VARIANTS:-all-trees rejected-random no-self-eval}; do
  D=$RUN/x-round-1-$v; mkdir -p $D
  case $v in
    all-trees) mcts-pref extract-pairs $RUN/round-1/trees.jsonl --all-trees --out $D/pairs.jsonl ;;
    rejected-random) mcts-pref extract-pairs $RUN/round-1/trees.jsonl --rejected random --out $D/pairs.jsonl ;;
    no-self-eval)
      # examples/mcts_dpo_loop.sh's round-1 search, as run.sh ran it, plus --no-self-eval
      mcts-pref search $RUN/train.jsonl --shard 0/2 --model default --shots 2 --iterations 3 --children 3 \
        --root-children 5 --depth-limit 3 --max-depth 6 --max-step-tokens 24 --temperature 0.7 --no-self-eval \
        --seed 1 --out $D/trees.jsonl
      mcts-pref extract-pairs $D/trees.jsonl --out $D/pairs.jsonl ;;
  esac
  mcts-pref train-dpo $D/pairs.jsonl --model default --out $D/adapter --lr 2e-4 --beta 0.1 --epochs 2 --resume
  mcts-pref sample $RUN/test.jsonl --adapter $D/adapter --max-tokens 96 --out $D/samples.jsonl
  mcts-pref evaluate $D/samples.jsonl --out $D/scored.jsonl --report $D/report.json
done
