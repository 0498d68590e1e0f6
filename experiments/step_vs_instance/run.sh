#!/usr/bin/env bash
# Step-level search vs whole-solution preferences at equal generation compute, across seeds.
#
#   bash experiments/step_vs_instance/run.sh                 # all arms, SEEDS="0 1 2"
#   SEEDS=0 ARMS="b c" bash experiments/step_vs_instance/run.sh
#
# Arms (2 rounds each, same held-out test set for every arm and seed):
#   a  MCTS-DPO, the paper's values (self-eval + outcome, duplicates merge)
#   b  MCTS-DPO with process values: outcome + checker-gate, distinct siblings, --checked pairs
#   c  instance-level DPO: k samples per problem, one right vs one wrong solution
#   d  as c, but a right solution is chosen only if the step checker finds no false claim in it
# c and d sample, each round, as many tokens as b's search generated that round
# (expansions, rollouts, everything), with the previous round's policy of their own arm.
# Every stage resumes, so a killed run continues where it stopped. Results:
# runs/svi-<arm>-s<seed>/ and experiments/step_vs_instance/results.json (analyze.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d .venv ] && export PATH="$PWD/.venv/bin:$PATH"

SEEDS=${SEEDS:-"0 1 2"}
ARMS=${ARMS:-"a b c d"}
export ROUNDS=2 N_TRAIN=${N_TRAIN:-64} N_TEST=${N_TEST:-240} TEST_SEED=${TEST_SEED:-900000}
export LR=${LR:-2e-4} BETA=${BETA:-0.1} EPOCHS=${EPOCHS:-2}
export ITERATIONS=3 CHILDREN=3 ROOT_CHILDREN=5 DEPTH_LIMIT=3 MAX_DEPTH=8 MAX_STEP_TOKENS=24
# A task whose solutions take 3 steps: three one-digit terms, with two chain_sum exemplars that
# write one operation per line (gold rationales of another generator seed). Measured greedy on 60
# problems: 2.97 steps per solution, 15.0% correct. Four terms gave 3.4 steps but 2.5% (n = 40).
export TASK=gym:chain_sum
export TASK_CONFIG="--config min_terms=3 --config max_terms=3 --config min_digits=1 --config max_digits=1"
SHOTS_FILE=runs/svi-shots.jsonl
if [ ! -s "$SHOTS_FILE" ]; then
  # shellcheck disable=SC2086
  mcts-pref prepare "$TASK" --size 2 --seed 424242 $TASK_CONFIG --out "$SHOTS_FILE"
fi
export SHOTS=2 SHOTS_FROM=$SHOTS_FILE

for seed in $SEEDS; do
  for arm in $ARMS; do
    case $arm in
      a) NAME=svi-a-s$seed SEED=$seed VALUE=self-eval=1,outcome=1 RESAMPLE=0 PAIRS= bash examples/mcts_dpo_loop.sh ;;
      b) NAME=svi-b-s$seed SEED=$seed VALUE=outcome,checker-gate RESAMPLE=1 PAIRS=--checked bash examples/mcts_dpo_loop.sh ;;
      c|d)
        B=runs/svi-b-s$seed
        [ -s "$B/round-$ROUNDS/report.json" ] || { echo "arm $arm needs arm b of seed $seed first" >&2; exit 2; }
        if [ "$arm" = d ]; then
          bash experiments/step_vs_instance/instance_arm.sh "$B" "runs/svi-d-s$seed" "$seed" --checked "runs/svi-c-s$seed"
        else
          bash experiments/step_vs_instance/instance_arm.sh "$B" "runs/svi-c-s$seed" "$seed"
        fi
        ;;
      *) echo "unknown arm $arm" >&2; exit 2 ;;
    esac
  done
done
python3 experiments/step_vs_instance/analyze.py runs experiments/step_vs_instance/results.json
