"""The GRPO arms (g, g4): TRL's GRPOTrainer on arm b's problems at a multiple of b's generated tokens.

    # one arm: round k trains on b's round-k problems until BUDGET x b's round-k tokens are generated
    python3 grpo_arm.py arm runs/tva-b-s0 runs/tva-g-s0 --seed 0 --budget 1 --lr-file runs/tva/grpo-lr.json
    # the learning rate, chosen on the validation split (never on test problems)
    python3 grpo_arm.py tune runs/tva/grpo-lr --problems P --validation V --tokens 17500 --lrs 5e-5 2e-4 8e-4

TRL is not a dependency of mcts-pref: ``pip install trl==1.16.0``. The policy,
its prompt (mcts-pref's own prompt with the same exemplars) and the LoRA shape
are mcts-pref's; the reward is mcts-pref's answer checker, applied to the
completion up to its first answer line (where ``sample`` stops). Every
generated token is counted, including any after the answer line, and a
callback ends training at the step where the count reaches the budget.
Round k's adapter is saved in PEFT format, so ``sample --adapter`` evaluates
it like every other arm. A round whose adapter exists is skipped; a killed
round is redone from its start.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mcts_pref.prompts import format_prompt, load_shots, resolve_format
from mcts_pref.tasks import is_answer_line, score

LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
EVAL_TOKENS = 96
STEP_SLACK = 1.5
MCTS_PREF = [sys.executable, "-m", "mcts_pref"]  # this interpreter's mcts-pref, whatever is on PATH


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def up_to_answer(text: str, task: str) -> str:
    """The completion cut after its first answer line: what ``sample`` would have returned."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if is_answer_line(line, task):
            return "\n".join(lines[: i + 1])
    return text


class Reward:
    """mcts-pref's answer checker as a TRL reward function; counts the tokens it is shown."""

    __name__ = "mcts_pref_answer"

    def __init__(self) -> None:
        self.tokens = 0
        self.completions = 0
        self.right = 0

    def __call__(self, prompts, completions, completion_ids, answer, task, **_):
        self.tokens += sum(len(ids) for ids in completion_ids)
        out = []
        for text, gold, t in zip(completions, answer, task):
            _, correct, _ = score(up_to_answer(text, t), gold, t)
            out.append(1.0 if correct else 0.0)
        self.completions += len(out)
        self.right += int(sum(out))
        return out


def train_round(model_id: str, problems: list[dict], *, budget: int, lr: float, seed: int, adapter_in: str | None,
                out: Path, shots_from: str | None, est_tokens: float, generations: int = 8) -> dict:
    """One GRPO round; writes ``out/adapter`` and returns its accounting."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from mcts_pref.policy import load_model
    from mcts_pref.policy_spec import PolicySpec

    torch.manual_seed(seed)
    base, tok = load_model(PolicySpec(model=model_id, dtype="fp32", device="cpu"))
    fmt = resolve_format("auto", tok)
    shots = load_shots(2, shots_from)
    rows = [{"prompt": format_prompt(p, tok, fmt, shots), "answer": str(p["answer"]), "task": p.get("task") or "math"}
            for p in problems]
    # The budget callback is what ends training; max_steps (1.5x the estimate) only bounds it, so a
    # round whose completions run shorter than the estimate still reaches its budget.
    steps = max(1, math.ceil(STEP_SLACK * budget / (generations * est_tokens)))
    # One prompt per step; go round the problems as often as the budget needs, reshuffled each pass.
    rng = random.Random(seed)
    order: list[dict] = []
    while len(order) < steps + 2:
        block = rows[:]
        rng.shuffle(block)
        order += block
    reward = Reward()

    class StopAtBudget(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if reward.tokens >= budget:
                control.should_training_stop = True

    cfg = GRPOConfig(output_dir=str(out / "grpo"), use_cpu=True, bf16=False, learning_rate=lr,
                     max_completion_length=EVAL_TOKENS, per_device_train_batch_size=generations,
                     num_generations=generations, max_steps=steps, logging_steps=1, save_strategy="no",
                     report_to=[], seed=seed, shuffle_dataset=False, disable_tqdm=True,
                     gradient_checkpointing=False)  # recomputation buys nothing for 135M on CPU
    peft_config = None
    if adapter_in:
        model = PeftModel.from_pretrained(base, adapter_in, is_trainable=True)
    else:
        model, peft_config = base, LoraConfig(bias="none", task_type="CAUSAL_LM", **LORA)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=Dataset.from_list(order),
                          processing_class=tok, peft_config=peft_config, callbacks=[StopAtBudget()])
    t0 = time.time()
    trainer.train()
    seconds = time.time() - t0
    for old in (out / "adapter.tmp", out / "adapter"):  # a round killed after saving is redone whole
        shutil.rmtree(old, ignore_errors=True)
    trainer.model.save_pretrained(str(out / "adapter.tmp"))
    os.replace(out / "adapter.tmp", out / "adapter")
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    return {"lr": lr, "budget_tokens": budget, "generated_tokens": reward.tokens, "completions": reward.completions,
            "budget_reached": reward.tokens >= budget,
            "steps": trainer.state.global_step, "max_steps": steps, "train_s": round(seconds, 1),
            "reward_mean": reward.right / max(1, reward.completions), "reward_per_step": rewards}


def evaluate(model_id: str, test: Path, adapter: Path, out: Path, seed: int, shots_from: str | None) -> dict:
    """The same greedy ``sample`` + ``evaluate`` commands as every other arm."""
    shots = ["--shots", "2"] + (["--shots-from", shots_from] if shots_from else [])
    if not (out / "report.json").exists():
        subprocess.run([*MCTS_PREF, "sample", str(test), "--model", model_id, "--adapter", str(adapter), *shots,
                        "--max-tokens", str(EVAL_TOKENS), "--seed", str(seed), "--out", str(out / "samples.jsonl")],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([*MCTS_PREF, "evaluate", str(out / "samples.jsonl"), "--out", str(out / "scored.jsonl"),
                        "--report", str(out / "report.json")], check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "report.json").read_text())


def mean_sample_tokens(path: Path) -> float:
    lengths = [r["n_tokens"] for r in jsonl(path)]
    return sum(lengths) / len(lengths)


def run_arm(a) -> None:
    src, run = Path(a.b_run), Path(a.out)
    lr = a.lr if a.lr is not None else json.loads(Path(a.lr_file).read_text())["lr"]
    (run / "round-0").mkdir(parents=True, exist_ok=True)
    for f in ("test.jsonl", "train.jsonl"):
        if not (run / f).exists():
            (run / f).write_text((src / f).read_text())
    for f in ("samples.jsonl", "scored.jsonl", "report.json"):  # round 0 is the shared base policy
        if not (run / "round-0" / f).exists() and (src / "round-0" / f).exists():
            (run / "round-0" / f).write_text((src / "round-0" / f).read_text())
    # Completion length for max_steps: the base policy's greedy solutions of the validation split
    # (written by `tune`), never test outputs.
    est = mean_sample_tokens(Path(a.length_from))
    adapter = None
    for k in range(1, a.rounds + 1):
        r = run / f"round-{k}"
        r.mkdir(exist_ok=True)
        trees = jsonl(src / f"round-{k}" / "trees.jsonl")
        problems = [{"id": t["problem_id"], "question": t["question"], "answer": t["answer"], "task": t.get("task")}
                    for t in trees]
        b_tokens = sum(t["stats"]["tokens"] for t in trees)
        if not (r / "grpo.json").exists():
            print(f"round {k}: GRPO on {len(problems)} problems, {a.budget} x {b_tokens} tokens, lr {lr}",
                  file=sys.stderr)
            acct = train_round(a.model, problems, budget=round(a.budget * b_tokens), lr=lr, seed=a.seed + k,
                               adapter_in=adapter, out=r, shots_from=a.shots_from, est_tokens=est)
            acct["b_tokens"] = b_tokens
            (r / "grpo.json").write_text(json.dumps(acct, indent=1) + "\n")
        adapter = str(r / "adapter")
        rep = evaluate(a.model, run / "test.jsonl", r / "adapter", r, a.seed, a.shots_from)
        print(f"round {k}: {rep.get('accuracy')}", file=sys.stderr)


def run_tune(a) -> None:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    problems = jsonl(Path(a.problems))[: a.n_problems]
    base = out / "base"
    base.mkdir(exist_ok=True)
    results = []
    for lr in a.lrs:
        r = out / f"lr-{lr:g}"
        r.mkdir(exist_ok=True)
        if not (r / "grpo.json").exists():
            if not (base / "samples.jsonl").exists():
                # The length estimate for max_steps: greedy base-policy solutions of the validation problems.
                subprocess.run([*MCTS_PREF, "sample", a.validation, "--model", a.model, "--shots", "2",
                                *(["--shots-from", a.shots_from] if a.shots_from else []), "--max-tokens",
                                str(EVAL_TOKENS), "--out", str(base / "samples.jsonl")], check=True,
                               stdout=subprocess.DEVNULL)
            acct = train_round(a.model, problems, budget=a.tokens, lr=lr, seed=a.seed, adapter_in=None, out=r,
                               shots_from=a.shots_from, est_tokens=mean_sample_tokens(base / "samples.jsonl"))
            (r / "grpo.json").write_text(json.dumps(acct, indent=1) + "\n")
        rep = evaluate(a.model, Path(a.validation), r / "adapter", r, a.seed, a.shots_from)
        results.append({"lr": lr, "accuracy": rep["accuracy"], "n": rep["n_problems"]})
        print(f"lr {lr:g}: validation accuracy {rep['accuracy']:.3f} (n = {rep['n_problems']})", file=sys.stderr)
    best = max(results, key=lambda x: (x["accuracy"], -x["lr"]))  # ties go to the smaller rate
    (out.parent / f"{out.name}.json").write_text(json.dumps({"lr": best["lr"], "grid": results}, indent=1) + "\n")
    print(f"chosen lr {best['lr']:g} -> {out.parent / (out.name + '.json')}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    arm = sub.add_parser("arm", help="one GRPO arm, matched to an MCTS-DPO run's tokens per round")
    arm.add_argument("b_run")
    arm.add_argument("out")
    arm.add_argument("--budget", type=float, default=1.0, help="multiple of b's generated tokens per round")
    arm.add_argument("--lr", type=float, default=None)
    arm.add_argument("--lr-file", default="runs/tva/grpo-lr.json")
    arm.add_argument("--rounds", type=int, default=2)
    arm.add_argument("--length-from", default="runs/tva/grpo-lr/base/samples.jsonl",
                     help="samples whose mean length sets max_steps (validation problems)")
    tune = sub.add_parser("tune", help="pick the learning rate on a validation split")
    tune.add_argument("out")
    tune.add_argument("--problems", required=True, help="training problems (never test problems)")
    tune.add_argument("--validation", required=True)
    tune.add_argument("--n-problems", type=int, default=64)
    tune.add_argument("--tokens", type=int, default=17500)
    tune.add_argument("--lrs", type=float, nargs="+", default=[5e-5, 2e-4, 8e-4])
    for p in (arm, tune):
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--model", default="default")
        p.add_argument("--shots-from", default="runs/tva/shots.jsonl")
    a = ap.parse_args(argv)
    run_arm(a) if a.cmd == "arm" else run_tune(a)


if __name__ == "__main__":
    main()
