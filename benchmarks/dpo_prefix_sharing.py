"""Seconds per DPO micro-batch (forward + backward) with and without encoding each prompt once.

    python benchmarks/dpo_prefix_sharing.py PAIRS.jsonl [--model default] [--batch-size 8] [--batches 4]

Same pairs, same LoRA model; `sequence_logps` runs chosen and rejected as two
full sequences, `shared_prefix_logps` runs each prompt once and shares its KV.
"""

from __future__ import annotations

import argparse
import time

import torch

from mcts_pref.dpo import collate, encode_pairs, sequence_logps, shared_prefix_logps
from mcts_pref.train import load_pairs
from mcts_pref.policy import load_model
from mcts_pref.policy_spec import PolicySpec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pairs")
    ap.add_argument("--model", default="default")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batches", type=int, default=4)
    args = ap.parse_args()
    from peft import LoraConfig, get_peft_model

    model, tok = load_model(PolicySpec(model=args.model))
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    model.train()
    pairs, _ = load_pairs([args.pairs])
    enc = encode_pairs(tok, pairs, max_length=1024)
    batches = [collate(enc[i:i + args.batch_size], tok.pad_token_id)
               for i in range(0, args.batch_size * args.batches, args.batch_size)]
    tokens = sum(len(e["prompt"]) + len(e["chosen"]) + len(e["rejected"]) for e in enc[: args.batch_size * args.batches])
    print(f"{len(batches)} batches of {args.batch_size} pairs, mean prompt {sum(len(e['prompt']) for e in enc) / len(enc):.0f} "
          f"tokens, mean step {sum(len(e['chosen']) + len(e['rejected']) for e in enc) / (2 * len(enc)):.0f} tokens ({tokens} in all)")
    for fn in (sequence_logps, shared_prefix_logps, sequence_logps, shared_prefix_logps):
        start = time.perf_counter()
        for b in batches:
            model.zero_grad()
            sums, _ = fn(model, b)
            sums.sum().backward()
        print(f"{fn.__name__:>20}: {(time.perf_counter() - start) / len(batches):.2f} s per micro-batch")


if __name__ == "__main__":
    main()
