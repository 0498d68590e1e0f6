#!/usr/bin/env bash
# Fan one stage out over N local processes (or GPUs) with --shard i/N, then merge.
#   N=4 bash examples/shards_xargs.sh problems.jsonl trees.jsonl
# Each shard writes its own resumable file; rerunning continues every shard.
set -euo pipefail
IN=$1; OUT=$2; N=${N:-4}; MODEL=${MODEL:-default}
dir=$(dirname "$OUT")/shards; mkdir -p "$dir"
seq 0 $((N - 1)) | xargs -P "$N" -I{} sh -c \
  "CUDA_VISIBLE_DEVICES={} mcts-pref search '$IN' --model '$MODEL' --shard {}/$N --out '$dir/trees-{}.jsonl'"
mcts-pref merge "$dir"/trees-*.jsonl --expect "$IN" --out "$OUT"
