"""`mcts-pref train-dpo`: step-level conservative DPO on a LoRA adapter.

This module is the command: its options take their defaults from
:class:`mcts_pref.dpo_config.DpoConfig`, the config the loop in ``train.py``
is typed by. The pure loss and log-probs are in ``dpo.py``, checkpoints and
the output-dir checks in ``checkpoint.py``.

A pair record is ``{"prompt", "chosen", "rejected", "label_smoothing"?}``:
``prompt`` is the question prompt plus the shared prefix of steps, and
``chosen`` / ``rejected`` are the next step after it. The log-prob of a step
is summed over that step's tokens only, with no EOS appended: a non-terminal
step is a continuation, not the end of a sequence.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Annotated

import typer

from mcts_pref.console import stage
from mcts_pref.dpo_config import DpoConfig
from mcts_pref.options import Seed, option
from mcts_pref.policy_spec import PolicySpec
from mcts_pref.train import train

_D = {f.name: f.default for f in fields(DpoConfig) if f.default is not MISSING}
Model, Adapter, Dtype, LoadIn4bit, TrustRemoteCode = (
    option(PolicySpec, name) for name in ("model", "adapter", "dtype", "load_in_4bit", "trust_remote_code"))
# accelerate places the model and picks the GPU itself: no cuda:N here.
TrainDevice = option(PolicySpec, "device",
                     help="auto | cpu | cuda. Pick GPUs with CUDA_VISIBLE_DEVICES or accelerate launch, not cuda:N.")


@stage
def command(
    pairs: Annotated[list[str], typer.Argument(help="Pair JSONL files (several = replay of earlier rounds); - for stdin.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output dir: LoRA adapter, train_config.json, metrics.jsonl.")],
    model: Model = PolicySpec.model,
    adapter: Adapter = PolicySpec.adapter,
    loss: Annotated[str, typer.Option(help="sigmoid (DPO, cDPO with label smoothing) | ipo.")] = _D["loss"],
    beta: Annotated[float, typer.Option(help="KL strength beta.")] = _D["beta"],
    label_smoothing: Annotated[float | None, typer.Option(
        help="Override every pair's label_smoothing eps (0 = plain DPO); default: each pair's own.")] = _D["label_smoothing"],
    length_norm: Annotated[bool, typer.Option("--length-norm", help="Divide each log-prob by its token count.")] = _D["length_norm"],
    nll_weight: Annotated[float, typer.Option(
        help="Add W x the chosen step's NLL per token to the loss (TRL's rpo_alpha; 0 = plain DPO).")] = _D["nll_weight"],
    terminal_eos: Annotated[bool, typer.Option(
        help="End steps the pair marks terminal with EOS (non-terminal steps never get one).")] = _D["terminal_eos"],
    max_length: Annotated[int, typer.Option(help="Max tokens of prompt + step; long prompts lose their start.")] = _D["max_length"],
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = _D["lora_r"],
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha (scale = alpha / r).")] = _D["lora_alpha"],
    lora_dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = _D["lora_dropout"],
    lora_targets: Annotated[str, typer.Option(help="Comma-separated module names LoRA wraps.")] = _D["lora_targets"],
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = _D["lr"],
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = _D["weight_decay"],
    warmup_ratio: Annotated[float, typer.Option(help="Fraction of steps of linear warmup before cosine decay.")] = _D["warmup_ratio"],
    max_grad_norm: Annotated[float, typer.Option(help="Gradient clipping norm (0 disables).")] = _D["max_grad_norm"],
    batch_size: Annotated[int, typer.Option(help="Pairs per micro-batch per process.")] = _D["batch_size"],
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = _D["grad_accum"],
    epochs: Annotated[int, typer.Option(help="Passes over the pairs.")] = _D["epochs"],
    max_steps: Annotated[int | None, typer.Option(
        help="Stop after this many optimizer steps and save a checkpoint; --resume finishes the run.")] = _D["max_steps"],
    save_every: Annotated[int, typer.Option(help="Checkpoint every N optimizer steps into OUT/checkpoint (0: off).")] = _D["save_every"],
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint (fresh start if none).")] = _D["resume"],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a finished or interrupted run in OUT.")] = _D["overwrite"],
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing", help="Recompute activations in backward.")] = _D["gradient_checkpointing"],
    seed: Seed = _D["seed"],
    dtype: Dtype = PolicySpec.dtype,
    load_in_4bit: LoadIn4bit = PolicySpec.load_in_4bit,
    trust_remote_code: TrustRemoteCode = PolicySpec.trust_remote_code,
    device: TrainDevice = PolicySpec.device,
) -> None:
    """Train a LoRA adapter on step-level preference pairs with (conservative) DPO.

    The reference policy is the base model with adapters disabled; its
    log-probs are computed once and cached in OUT/ref_logps.pt. Writes a peft
    adapter to OUT (use it with --adapter OUT), OUT/train_config.json and
    OUT/metrics.jsonl. Several GPUs (DDP): accelerate launch --multi_gpu
    --num_processes N -m mcts_pref train-dpo ... (--batch-size is per process).
    DeepSpeed ZeRO-2/3: accelerate launch --config_file
    examples/accelerate/deepspeed_zero2.yaml -m mcts_pref train-dpo ...
    (no --grad-accum > 1 there; see examples/accelerate/README.md).
    """
    train(DpoConfig(**{k: v for k, v in locals().items()}))
