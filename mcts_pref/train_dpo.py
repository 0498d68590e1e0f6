"""`mcts-pref train-dpo`: step-level conservative DPO on a LoRA adapter.

This module is the command: its options are built from the fields of
:class:`mcts_pref.dpo_config.DpoConfig` (their help and defaults), the config
the loop in ``train.py`` is typed by. The pure loss and log-probs are in
``dpo.py``, checkpoints and the output-dir checks in ``checkpoint.py``.

A pair record is ``{"prompt", "chosen", "rejected", "label_smoothing"?}``:
``prompt`` is the question prompt plus the shared prefix of steps, and
``chosen`` / ``rejected`` are the next step after it. The log-prob of a step
is summed over that step's tokens only, with no EOS appended: a non-terminal
step is a continuation, not the end of a sequence.
"""

from __future__ import annotations

from typing import Annotated

import typer

from mcts_pref.console import stage
from mcts_pref.dpo_config import DpoConfig
from mcts_pref.options import Seed, option, options_from
from mcts_pref.policy_spec import PolicySpec
from mcts_pref.train import train

Model, Adapter, Dtype, LoadIn4bit, TrustRemoteCode = (
    option(PolicySpec, name) for name in ("model", "adapter", "dtype", "load_in_4bit", "trust_remote_code"))
# accelerate places the model and picks the GPU itself: no cuda:N here.
TrainDevice = option(PolicySpec, "device",
                     help="auto | cpu | cuda. Pick GPUs with CUDA_VISIBLE_DEVICES or accelerate launch, not cuda:N.")
# The DpoConfig fields that are no knob of its own: the command declares them, options_from puts them into cfg.
_DECLARED = ("pairs", "out", "model", "adapter", "seed", "dtype", "load_in_4bit", "trust_remote_code", "device")


@stage
@options_from(DpoConfig, "cfg", exclude=_DECLARED)
def command(
    pairs: Annotated[list[str], typer.Argument(help="Pair JSONL files (several = replay of earlier rounds); - for stdin.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output dir: LoRA adapter, train_config.json, metrics.jsonl, "
                                                         "ref_logps.pt (reference cache) and checkpoint/.")],
    model: Model = PolicySpec.model,
    adapter: Adapter = PolicySpec.adapter,
    *,
    cfg: DpoConfig,
    seed: Seed = DpoConfig.seed,
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
    train(cfg)
