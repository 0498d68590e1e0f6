#!/usr/bin/env bash
# MCTS-DPO vs instance-level DPO at matched generation compute, on the bundled
# SmolLM2-135M and reasoning-gym chain_sum (3 one-digit terms).
#   bash experiments/chain_sum/run.sh            # ~1 h on 2 CPU cores
# Results: runs/$NAME/ (report table), summarised in experiments/chain_sum/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d .venv ] && export PATH="$PWD/.venv/bin:$PATH"
export NAME=${NAME:-chain_sum_exp} ROUNDS=${ROUNDS:-2} N_TRAIN=${N_TRAIN:-64} N_TEST=${N_TEST:-200}
export LR=${LR:-2e-4} BETA=${BETA:-0.1} EPOCHS=${EPOCHS:-2}
RUN=runs/$NAME

# 1. The MCTS-DPO loop (round 0 = base policy, rounds 1..ROUNDS).
bash examples/mcts_dpo_loop.sh

# 2. The baseline, iterated the same way: each round, instance-level pairs (one
#    correct vs one wrong whole solution) from samples of that round's training
#    problems by the previous baseline policy, k chosen so that sampling generates
#    about as many tokens as that round's search did; train-dpo continues the adapter.
adapter=()
for k in $(seq 1 "$ROUNDS"); do
  B=$RUN/baseline-$k
  mkdir -p "$B"
  python3 - "$RUN" "$ROUNDS" "$k" "$B" <<'PY'
import json, sys
run, rounds, k, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
train = [json.loads(l) for l in open(f"{run}/train.jsonl")]
mine = [p for i, p in enumerate(train) if i % rounds == k - 1]     # round k's shard
open(f"{b}/train.jsonl", "w").writelines(json.dumps(p) + "\n" for p in mine)
trees = [json.loads(l) for l in open(f"{run}/round-{k}/trees.jsonl")]
search_tokens = sum(t["stats"]["tokens"] for t in trees)
# Tokens per whole solution: round 1 uses the base policy's greedy test answers,
# which run longer than T=0.7 samples (3 terms: 21.4 vs 18.2 tokens), so round 1's
# k comes out low (4 terms: 89% of the search's tokens); later rounds use the
# previous baseline round's own T=0.7 training samples.
prev = f"{run}/round-0/samples.jsonl" if k == 1 else f"{run}/baseline-{k - 1}/train_samples.jsonl"
lengths = [json.loads(l)["n_tokens"] for l in open(prev)]
per_sample = sum(lengths) / len(lengths)
n = max(2, round(search_tokens / (len(mine) * per_sample)))
open(f"{b}/k", "w").write(str(n))
print(f"baseline round {k}: {len(mine)} problems, search used {search_tokens} tokens, "
      f"{per_sample:.1f} tokens per solution -> k = {n}", file=sys.stderr)
PY
  mcts-pref sample "$B/train.jsonl" --model default "${adapter[@]}" -k "$(cat "$B/k")" --temperature 0.7 --top-p 0.95 \
    --max-tokens 96 --seed "$k" --out "$B/train_samples.jsonl"
  mcts-pref evaluate "$B/train_samples.jsonl" --out "$B/train_scored.jsonl" --report "$B/train_report.json"
  mcts-pref instance-pairs "$B/train_scored.jsonl" --out "$B/pairs.jsonl"
  mcts-pref train-dpo "$B/pairs.jsonl" --model default "${adapter[@]}" --out "$B/adapter" \
    --lr "$LR" --beta "$BETA" --epochs "$EPOCHS" --save-every 10 --resume
  adapter=(--adapter "$B/adapter")
  mcts-pref sample "$RUN/test.jsonl" "${adapter[@]}" --max-tokens 96 --out "$B/samples.jsonl"
  mcts-pref evaluate "$B/samples.jsonl" --out "$B/scored.jsonl" --report "$B/report.json"
done

mcts-pref report "$RUN" --plot "$RUN/report.png"
mcts-pref report "$RUN" --json > "$RUN/report_rows.json"
python3 experiments/chain_sum/analyze.py "$RUN"
