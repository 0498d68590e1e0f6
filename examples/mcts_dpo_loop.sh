#!/usr/bin/env bash
# The iterated MCTS-DPO loop as a plain pipeline of mcts-pref stages.
#
#   round 0:  sample + evaluate the base policy on held-out problems
#   round k:  search (policy of round k-1) -> extract-pairs -> train-dpo -> sample -> evaluate
#   CURRICULUM=1: round k first samples POOL_K solutions per problem of a pool of
#             POOL_FACTOR x N_TRAIN fresh problems (policy of round k-1), evaluates them,
#             and searches at most N_TRAIN of those whose pass rate lies in BAND
#
# Every artifact lands in runs/$NAME/round-<k>/. Rerunning a killed script continues
# where it stopped: search and sample resume their --out files, train-dpo resumes its
# checkpoint, finished stages are skipped. Override any knob below from the environment:
#   NAME=big ROUNDS=3 N_TRAIN=200 bash examples/mcts_dpo_loop.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] && export PATH="$PWD/.venv/bin:$PATH"

NAME=${NAME:-demo}
MODEL=${MODEL:-default}               # HF id, local dir, or 'default' (bundled SmolLM2-135M)
ROUNDS=${ROUNDS:-2}
TASK=${TASK:-gym:chain_sum}           # a task the model sometimes solves
TASK_CONFIG=${TASK_CONFIG:---config min_terms=3 --config max_terms=3 --config min_digits=1 --config max_digits=1}
N_TRAIN=${N_TRAIN:-64}                # new training problems searched per round
N_TEST=${N_TEST:-200}                 # fixed held-out problems, never searched (paired tests need n ~ 200)
SHOTS=${SHOTS:-2}                     # few-shot exemplars: one step per line
SHOTS_FROM=${SHOTS_FROM-task}         # exemplars: 'task' (SHOTS gold rationales of TASK, generator seed
                                      # SHOTS_SEED), a problem file with rationales, or '' (built-in ones)
SHOTS_SEED=${SHOTS_SEED:-424242}
# search
ITERATIONS=${ITERATIONS:-3}           # MCTS iterations per committed step (x4 at the root)
CHILDREN=${CHILDREN:-3}
ROOT_CHILDREN=${ROOT_CHILDREN:-5}
DEPTH_LIMIT=${DEPTH_LIMIT:-3}
MAX_DEPTH=${MAX_DEPTH:-8}
MAX_STEP_TOKENS=${MAX_STEP_TOKENS:-24}
TEMPERATURE=${TEMPERATURE:-0.7}
VALUE=${VALUE:-outcome,checker-gate}  # node value terms (search --value); the paper's rule: self-eval=1,outcome=1
ROLLOUTS=${ROLLOUTS:-4}               # K completions per node, used when VALUE has a rollout term
RESAMPLE=${RESAMPLE:-1}               # extra sampling rounds that replace duplicate siblings (0: paper code)
# pairs + DPO
MIN_MARGIN=${MIN_MARGIN:-0.0}
TREES=${TREES:---only-correct-trees}   # --all-trees: also pairs from trees whose committed answer is wrong
PAIRS=${PAIRS---checked}              # more extract-pairs flags ('' for none), e.g. "--checked --eps add-one"
LR=${LR:-2e-4}
BETA=${BETA:-0.1}
EPOCHS=${EPOCHS:-2}
LORA_R=${LORA_R:-8}
REPLAY=${REPLAY:-0}                   # 1: also train on every earlier round's pairs
# evaluation
EVAL_TOKENS=${EVAL_TOKENS:-96}
SEED=${SEED:-0}
# Generators such as reasoning-gym seed problem i as seed + i, so seeds 0 and 1 would share all but
# one problem: problems come from generator seed SEED * 1000003 (SEED = 0 is unchanged).
DATA_SEED=$((SEED * 1000003))
TEST_SEED=${TEST_SEED:-$((DATA_SEED + 100000))}  # fix it to keep one held-out set across seeds
# curriculum (off unless CURRICULUM=1): search where the policy sometimes succeeds.
# The pool's sampling tokens are that round's training-data compute (report's data column).
CURRICULUM=${CURRICULUM:-}
POOL_FACTOR=${POOL_FACTOR:-4}          # pool of POOL_FACTOR x N_TRAIN problems per round
POOL_K=${POOL_K:-4}                    # solutions sampled per pool problem (at TEMPERATURE)
POOL_TOKENS=${POOL_TOKENS:-$EVAL_TOKENS}
BAND=${BAND:-0.1,0.9}                  # keep pass rates LO <= rate <= HI
case "$CURRICULUM" in
  ""|0) POOL=$N_TRAIN ;;
  1) POOL=$((N_TRAIN * POOL_FACTOR)) ;;
  *) echo "CURRICULUM must be 1 (on), 0 or unset (off), got '$CURRICULUM'" >&2; exit 2 ;;
esac

RUN=runs/$NAME
mkdir -p "$RUN/round-0"
if [ "$SHOTS_FROM" = task ] && [ "$SHOTS" -gt 0 ]; then
  SHOTS_FROM=$RUN/shots.jsonl
  if [ ! -s "$SHOTS_FROM" ]; then
    # shellcheck disable=SC2086
    mcts-pref prepare "$TASK" --size "$SHOTS" --seed "$SHOTS_SEED" $TASK_CONFIG --out "$SHOTS_FROM.tmp"
    mv "$SHOTS_FROM.tmp" "$SHOTS_FROM"
  fi
fi
shots=(--shots "$SHOTS")
[ -n "$SHOTS_FROM" ] && shots+=(--shots-from "$SHOTS_FROM")
say() { printf '\n== %s\n' "$*" >&2; }

# Problems: train and test come from different generator seeds, and any test
# question that also appears in train is dropped, so the test set is never searched.
if [ ! -s "$RUN/test.jsonl" ]; then
  say "prepare $TASK"
  # shellcheck disable=SC2086
  mcts-pref prepare "$TASK" --size $((POOL * ROUNDS)) --seed "$DATA_SEED" $TASK_CONFIG --out "$RUN/train.jsonl.tmp"
  # shellcheck disable=SC2086
  mcts-pref prepare "$TASK" --size "$N_TEST" --seed "$TEST_SEED" $TASK_CONFIG --out "$RUN/test.jsonl.tmp"
  python3 - "$RUN" <<'PY'
import json, sys
run = sys.argv[1]
train = [json.loads(l) for l in open(f"{run}/train.jsonl.tmp")]
seen = {p["question"] for p in train}
test = [l for l in open(f"{run}/test.jsonl.tmp") if json.loads(l)["question"] not in seen]
open(f"{run}/test.jsonl", "w").writelines(test)
PY
  mv "$RUN/train.jsonl.tmp" "$RUN/train.jsonl"
  rm -f "$RUN/test.jsonl.tmp"
fi

evaluate_policy() {  # $1 = round dir, $2.. = policy options
  local dir=$1; shift
  mcts-pref sample "$RUN/test.jsonl" --model "$MODEL" "$@" "${shots[@]}" --max-tokens "$EVAL_TOKENS" \
    --seed "$SEED" --out "$dir/samples.jsonl"
  mcts-pref evaluate "$dir/samples.jsonl" --out "$dir/scored.jsonl" --report "$dir/report.json"
}

if [ ! -s "$RUN/round-0/report.json" ]; then
  say "round 0: evaluate the base policy"
  evaluate_policy "$RUN/round-0"
fi

adapter=()
replay=()
for k in $(seq 1 "$ROUNDS"); do
  R="$RUN/round-$k"
  mkdir -p "$R"
  problems=("$RUN/train.jsonl" --shard "$((k - 1))/$ROUNDS")
  if [ "$CURRICULUM" = 1 ]; then
    if [ ! -f "$R/problems.jsonl" ]; then
      say "round $k: curriculum (sample $POOL_K per pool problem with the policy of round $((k - 1)))"
      mcts-pref sample "${problems[@]}" --model "$MODEL" "${adapter[@]}" "${shots[@]}" -k "$POOL_K" \
        --temperature "$TEMPERATURE" --max-tokens "$POOL_TOKENS" --seed $((SEED + k)) --out "$R/pool_samples.jsonl"
      mcts-pref evaluate "$R/pool_samples.jsonl" --out "$R/pool_scored.jsonl"
      mcts-pref curriculum "$R/pool_scored.jsonl" --problems "$RUN/train.jsonl" --band "$BAND" --limit "$N_TRAIN" \
        --out "$R/problems.jsonl.tmp"
      mv "$R/problems.jsonl.tmp" "$R/problems.jsonl"
    fi
    if [ ! -s "$R/problems.jsonl" ]; then
      echo "round $k: no pool problem has a pass rate in $BAND; stopping (try another BAND or a larger POOL_FACTOR)" >&2
      break
    fi
    problems=("$R/problems.jsonl")
  fi

  say "round $k: search (policy of round $((k - 1)))"
  mcts-pref search "${problems[@]}" --model "$MODEL" "${adapter[@]}" \
    "${shots[@]}" --iterations "$ITERATIONS" --children "$CHILDREN" --root-children "$ROOT_CHILDREN" \
    --depth-limit "$DEPTH_LIMIT" --max-depth "$MAX_DEPTH" --max-step-tokens "$MAX_STEP_TOKENS" \
    --temperature "$TEMPERATURE" --value "$VALUE" --rollouts "$ROLLOUTS" --resample-duplicates "$RESAMPLE" \
    --seed $((SEED + k)) --out "$R/trees.jsonl"

  say "round $k: extract-pairs"
  # shellcheck disable=SC2086
  mcts-pref extract-pairs "$R/trees.jsonl" --min-margin "$MIN_MARGIN" "$TREES" $PAIRS --out "$R/pairs.jsonl"
  if [ ! -s "$R/pairs.jsonl" ]; then
    echo "round $k: the search produced no preference pairs; stopping (try more ITERATIONS or N_TRAIN)" >&2
    break
  fi

  if [ ! -f "$R/adapter/adapter_model.safetensors" ]; then
    say "round $k: train-dpo"
    # The reference stays the base model; the adapter of round k-1 is trained further.
    mcts-pref train-dpo "${replay[@]}" "$R/pairs.jsonl" --model "$MODEL" "${adapter[@]}" --out "$R/adapter" \
      --lr "$LR" --beta "$BETA" --epochs "$EPOCHS" --lora-r "$LORA_R" --seed "$SEED" --save-every 10 --resume
  fi
  adapter=(--adapter "$R/adapter")
  [ "$REPLAY" = 1 ] && replay+=("$R/pairs.jsonl")

  if [ ! -s "$R/report.json" ]; then
    say "round $k: evaluate"
    evaluate_policy "$R" "${adapter[@]}"
  fi
done

mcts-pref report "$RUN"
