#!/usr/bin/env bash
# One instance-level DPO run compute-matched to an MCTS-DPO run of the loop script.
#   instance_arm.sh MCTS_RUN OUT_RUN SEED [--checked [TWIN_RUN]]
# Round k samples the MCTS run's round-k training problems with this arm's round k-1 policy,
# k per problem chosen so that sampling generates as many tokens as the MCTS search did.
# TWIN_RUN: another instance arm of the same seed; round 1 samples the same problems with the
# same base policy, k and seed, so its finished round-1 samples are copied, not drawn again.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d .venv ] && export PATH="$PWD/.venv/bin:$PATH"
SRC=$1 RUN=$2 SEED=$3 CHECKED=${4:-} TWIN=${5:-}
mkdir -p "$RUN/round-0"
cp -n "$SRC/test.jsonl" "$SRC/train.jsonl" "$RUN/" 2>/dev/null || true
# Round 0 is the same base policy on the same test set: reuse it.
for f in samples.jsonl scored.jsonl report.json; do cp -n "$SRC/round-0/$f" "$RUN/round-0/" 2>/dev/null || true; done
shots=(--shots "${SHOTS:-2}")
[ -n "${SHOTS_FROM:-}" ] && shots+=(--shots-from "$SHOTS_FROM")
adapter=()
for k in $(seq 1 "$ROUNDS"); do
  R=$RUN/round-$k
  mkdir -p "$R"
  if [ ! -s "$R/k" ]; then
    python3 - "$SRC" "$k" "$R" <<'PY'
import json, sys
src, k, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
trees = [json.loads(l) for l in open(f"{src}/round-{k}/trees.jsonl")]
problems = [{"v": 1, "id": t["problem_id"], "question": t["question"], "answer": t["answer"], "task": t["task"],
             **({"source": t["source"]} if t.get("source") else {})} for t in trees]
open(f"{out}/problems.jsonl", "w").writelines(json.dumps(p) + "\n" for p in problems)
tokens = sum(t["stats"]["tokens"] for t in trees)
lengths = [json.loads(l)["n_tokens"] for l in open(f"{src}/round-0/samples.jsonl")]
n = max(2, round(tokens / (len(problems) * sum(lengths) / len(lengths))))
open(f"{out}/k", "w").write(str(n))
print(f"round {k}: {len(problems)} problems, search used {tokens} tokens -> k = {n}", file=sys.stderr)
PY
  fi
  T=$TWIN/round-1
  if [ "$k" = 1 ] && [ -n "$TWIN" ] && [ -s "$T/train_report.json" ] && cmp -s "$T/k" "$R/k" \
     && cmp -s "$T/problems.jsonl" "$R/problems.jsonl" && [ ! -s "$R/train_samples.jsonl" ]; then
    cp "$T/train_samples.jsonl" "$R/train_samples.jsonl"
  fi
  mcts-pref sample "$R/problems.jsonl" --model default "${adapter[@]}" "${shots[@]}" -k "$(cat "$R/k")" \
    --temperature 0.7 --top-p 0.95 --max-tokens 96 --seed "$((SEED + k))" --out "$R/train_samples.jsonl"
  [ -s "$R/train_report.json" ] || mcts-pref evaluate "$R/train_samples.jsonl" --out "$R/train_scored.jsonl" --report "$R/train_report.json"
  # shellcheck disable=SC2086
  [ -s "$R/pairs.jsonl" ] || mcts-pref instance-pairs "$R/train_scored.jsonl" $CHECKED --seed "$SEED" --out "$R/pairs.jsonl"
  if [ ! -f "$R/adapter/adapter_model.safetensors" ]; then
    mcts-pref train-dpo "$R/pairs.jsonl" --model default "${adapter[@]}" --out "$R/adapter" \
      --lr "$LR" --beta "$BETA" --epochs "$EPOCHS" --seed "$SEED" --save-every 10 --resume
  fi
  adapter=(--adapter "$R/adapter")
  mcts-pref sample "$RUN/test.jsonl" --model default "${adapter[@]}" "${shots[@]}" --max-tokens 96 \
    --seed "$SEED" --out "$R/samples.jsonl"
  [ -s "$R/report.json" ] || mcts-pref evaluate "$R/samples.jsonl" --out "$R/scored.jsonl" --report "$R/report.json"
done
