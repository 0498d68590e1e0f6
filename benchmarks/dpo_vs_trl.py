"""Speed and memory of `train-dpo` against TRL's DPOTrainer on the same job.

Same pairs, base model, LoRA config (r, alpha, dropout, targets), batch size,
optimizer settings and max length. Each system runs in its own subprocess so
peak memory is its own: RSS (``ru_maxrss``) on CPU, plus
``torch.cuda.max_memory_allocated`` on CUDA. Seconds per step are the median
over optimizer steps, leaving out the first (allocator and kernel warm-up).

TRL is not a dependency of mcts-pref: ``pip install trl`` first (or put it on
PYTHONPATH). Systems:

- ``ours``: ``mcts_pref.train.train``; the reference log-probs are computed once
  before training (in ``total s``; later epochs and reruns reuse them).
- ``trl``: DPOTrainer defaults for LoRA: a reference forward (adapter disabled)
  in every step.
- ``trl-precompute``: DPOTrainer with ``precompute_ref_log_probs=True``.

Note that the two do not train the same sequences token for token: TRL appends
EOS to every chosen and rejected continuation, which mcts-pref deliberately
does not do for a step (the step is not the end of the solution).

    python benchmarks/dpo_vs_trl.py --model default --steps 10 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYSTEMS = ("ours", "trl", "trl-precompute")


def synthetic_pairs(n: int) -> list[dict]:
    """Step-level pairs shaped like the search's: a question prompt plus earlier steps, then one step."""
    out = []
    for i in range(n):
        a, b, c = 3 + i, 7 + 2 * i, 2 + i % 5
        prompt = (f"Question: A shop sells {a} apples in the morning and {b} in the afternoon, then "
                  f"{c} times as many in the evening as in the morning. How many apples did it sell?\n"
                  f"Answer: Let's think step by step.\nMorning and afternoon: {a} + {b} = {a + b}.\n")
        out.append({"v": 1, "prompt": prompt, "chosen": f"Evening: {c} * {a} = {c * a}.\n",
                    "rejected": f"Evening: {c} * {b} = {c * b}, which is the evening total.\n",
                    "problem_id": f"bench-{i}", "depth": 2, "label_smoothing": 0.0})
    return out


def _peak_memory_mb() -> dict:
    import torch

    mem = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        mem["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return mem


def run_ours(args, pairs_path: str, workdir: Path) -> dict:
    from mcts_pref.dpo_config import DpoConfig
    from mcts_pref.train import METRICS, train

    cfg = DpoConfig(pairs=[pairs_path], model=args.model, out=str(workdir / "ours"), batch_size=args.batch_size,
                    epochs=1, lr=args.lr, lora_r=args.lora_r, lora_alpha=args.lora_alpha, max_length=args.max_length,
                    label_smoothing=0.0, gradient_checkpointing=args.gradient_checkpointing)
    t0 = time.perf_counter()
    train(cfg)
    total = time.perf_counter() - t0
    rows = [json.loads(x) for x in (workdir / "ours" / METRICS).read_text().splitlines()]
    steps = [r["seconds"] for r in rows]
    train_seconds = json.loads((workdir / "ours" / "train_config.json").read_text())["seconds"]
    return {"steps": len(steps), "seconds_per_step": statistics.median(steps[1:] or steps),
            "total_seconds": total, "train_loop_seconds": train_seconds}


def run_trl(args, pairs_path: str, workdir: Path, precompute: bool) -> dict:
    try:
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer
    except ImportError:
        sys.exit("TRL is not installed: pip install trl (it is not a dependency of mcts-pref)")
    import torch
    from peft import LoraConfig
    from transformers import TrainerCallback

    from mcts_pref.policy import load_model
    from mcts_pref.policy_spec import PolicySpec

    cuda = torch.cuda.is_available()
    model, tok = load_model(PolicySpec(model=args.model, dtype="auto"))
    model.train()
    rows = [json.loads(x) for x in Path(pairs_path).read_text().splitlines() if x.strip()]
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    step_times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_times.append(time.perf_counter() - self.t)

    config = DPOConfig(
        output_dir=str(workdir / "trl"), per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
        num_train_epochs=1, learning_rate=args.lr, lr_scheduler_type="cosine", warmup_steps=0.1, max_grad_norm=1.0,
        beta=0.1, loss_type=["sigmoid"], max_length=args.max_length, precompute_ref_log_probs=precompute,
        logging_steps=1, report_to="none", save_strategy="no", seed=0, use_cpu=not cuda, bf16=cuda,
        gradient_checkpointing=args.gradient_checkpointing, dataloader_num_workers=0,
    )
    lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], bias="none", task_type="CAUSAL_LM")
    t0 = time.perf_counter()
    trainer = DPOTrainer(model=model, args=config, train_dataset=data, processing_class=tok, peft_config=lora,
                         callbacks=[Timer()])
    trainer.train()
    total = time.perf_counter() - t0
    return {"steps": len(step_times), "seconds_per_step": statistics.median(step_times[1:] or step_times),
            "total_seconds": total, "train_loop_seconds": sum(step_times)}


def child(args) -> None:
    import torch

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.child == "ours":
            res = run_ours(args, args.pairs_file, Path(tmp))
        else:
            res = run_trl(args, args.pairs_file, Path(tmp), precompute=args.child == "trl-precompute")
    print("RESULT " + json.dumps({**res, **_peak_memory_mb()}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="base model (as --model of mcts-pref)")
    p.add_argument("--pairs", help="pair JSONL (default: synthetic step-level pairs)")
    p.add_argument("--steps", type=int, default=10, help="optimizer steps (synthetic pairs = steps * batch size)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {','.join(SYSTEMS)}")
    p.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    p.add_argument("--pairs-file", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if any(s.startswith("trl") for s in systems):
        import importlib.util

        if importlib.util.find_spec("trl") is None:
            sys.exit("TRL is not installed: pip install trl (it is not a dependency of mcts-pref)")
    with tempfile.TemporaryDirectory() as tmp:
        pairs_file = args.pairs
        if not pairs_file:
            pairs_file = os.path.join(tmp, "pairs.jsonl")
            with open(pairs_file, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in synthetic_pairs(args.steps * args.batch_size))
        results = {}
        for system in systems:
            cmd = [sys.executable, __file__, "--child", system, "--pairs-file", pairs_file, *sys.argv[1:]]
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                sys.exit(f"{system} failed:\n{proc.stderr[-3000:]}")
            results[system] = json.loads(line[len("RESULT "):])

    mem_key = "peak_cuda_mb" if any("peak_cuda_mb" in r for r in results.values()) else "peak_rss_mb"
    print(f"model={args.model} batch={args.batch_size} lora_r={args.lora_r} max_length={args.max_length}")
    print(f"{'system':<16}{'steps':>6}{'s/step':>10}{'total s':>10}{mem_key:>14}{'s/step ratio':>14}{'mem ratio':>11}")
    for system, r in results.items():
        base = results.get("trl") or r
        print(f"{system:<16}{r['steps']:>6}{r['seconds_per_step']:>10.3f}{r['total_seconds']:>10.1f}{r[mem_key]:>14.0f}"
              f"{r['seconds_per_step'] / base['seconds_per_step']:>14.2f}{r[mem_key] / base[mem_key]:>11.2f}")
    print("ratios are against trl (reference forward every step); < 1 means mcts-pref is faster / smaller")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
