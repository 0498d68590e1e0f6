#!/usr/bin/env bash
# One arm of one seed:  arm.sh ARM SEED   (ARM: b, b0, c, g, g4; see README.md)
# Needs runs/tva/splits (splits.py). Every stage resumes, so rerunning a killed arm continues it.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d .venv ] && export PATH="$PWD/.venv/bin:$PATH"
# This checkout's code, even when the venv's editable install points at another worktree.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
arm=$1 seed=$2
S=runs/tva/splits/s$seed
[ -s "$S/test.jsonl" ] || { echo "no $S/test.jsonl: run splits.py first" >&2; exit 2; }
RUN=runs/tva-$arm-s$seed
B=runs/tva-b-s$seed
[ "$arm" = tune ] || mkdir -p "$RUN/round-0"
[ "$arm" = tune ] ||  cp -n "$S/train.jsonl" "$S/test.jsonl" "$RUN/"
# The pre-registered knobs, shared by every arm (the demo loop's defaults, written out).
export ROUNDS=2 N_TRAIN=64 LR=2e-4 BETA=0.1 EPOCHS=2 LORA_R=8
export ITERATIONS=3 CHILDREN=3 ROOT_CHILDREN=5 DEPTH_LIMIT=3 MAX_DEPTH=8 MAX_STEP_TOKENS=24 TEMPERATURE=0.7
export TASK=gym:chain_sum SHOTS=2 SHOTS_FROM=runs/tva/shots.jsonl EVAL_TOKENS=96
if [ ! -s "$SHOTS_FROM" ]; then
  mcts-pref prepare "$TASK" --size 2 --seed 424242 --config min_terms=3 --config max_terms=3 \
    --config min_digits=1 --config max_digits=1 --out "$SHOTS_FROM.tmp"
  mv "$SHOTS_FROM.tmp" "$SHOTS_FROM"
fi
# Round 0 is the base policy on this seed's test set, the same for every arm: evaluate it once.
if [ "$arm" != b ] && [ "$arm" != tune ] && [ -s "$B/round-0/report.json" ]; then
  for f in samples.jsonl scored.jsonl report.json; do cp -n "$B/round-0/$f" "$RUN/round-0/"; done
fi
need_b() { [ -s "$B/round-$ROUNDS/report.json" ] || { echo "arm $arm needs arm b of seed $seed first" >&2; exit 2; }; }
case $arm in
  prepare) mcts-pref sample "$S/test.jsonl" --model default --shard 0/200 --max-tokens 4 > /dev/null ;;  # converts the model once
  b)  NAME=tva-b-s$seed SEED=$seed VALUE=outcome,checker-gate RESAMPLE=1 PAIRS=--checked bash examples/mcts_dpo_loop.sh ;;
  b0) NAME=tva-b0-s$seed SEED=$seed VALUE=outcome RESAMPLE=1 PAIRS= bash examples/mcts_dpo_loop.sh ;;
  c)  need_b; bash experiments/step_vs_instance/instance_arm.sh "$B" "$RUN" "$seed" ;;
  tune) python3 experiments/tree_vs_alternatives/grpo_arm.py tune runs/tva/grpo-lr \
          --problems runs/tva/splits/tune_train.jsonl --validation runs/tva/splits/validation.jsonl ;;
  g)  need_b; python3 experiments/tree_vs_alternatives/grpo_arm.py arm "$B" "$RUN" --seed "$seed" --budget 1 ;;
  g4) need_b; python3 experiments/tree_vs_alternatives/grpo_arm.py arm "$B" "$RUN" --seed "$seed" --budget 4 ;;
  *) echo "unknown arm $arm" >&2; exit 2 ;;
esac
