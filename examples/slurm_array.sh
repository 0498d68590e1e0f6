#!/usr/bin/env bash
# A Slurm array job: one task per shard, each on one GPU. Submit, then merge:
#   sbatch --array=0-7 examples/slurm_array.sh problems.jsonl runs/x/shards
#   mcts-pref merge runs/x/shards/trees-*.jsonl --expect problems.jsonl --out runs/x/trees.jsonl
# A preempted task rerun with the same index resumes its own file.
#SBATCH --job-name=mcts-pref-search
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
set -euo pipefail
IN=$1; DIR=$2; MODEL=${MODEL:-default}
N=${SLURM_ARRAY_TASK_COUNT:?run as an array job}
i=${SLURM_ARRAY_TASK_ID:?run as an array job}
mkdir -p "$DIR"
mcts-pref search "$IN" --model "$MODEL" --shard "$i/$N" --out "$DIR/trees-$i.jsonl"
