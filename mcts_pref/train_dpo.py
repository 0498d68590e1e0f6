"""`mcts-pref train-dpo`: step-level conservative DPO on a LoRA adapter.

This module owns the command and its config, :class:`DpoConfig`, from which
every option takes its default and help: one source per knob. The loop is
in ``train.py``, the pure loss and log-probs in ``dpo.py``, checkpoints and
the output-dir checks in ``checkpoint.py``.

A pair record is ``{"prompt", "chosen", "rejected", "label_smoothing"?}``:
``prompt`` is the question prompt plus the shared prefix of steps, and
``chosen`` / ``rejected`` are the next step after it. The log-prob of a step
is summed over that step's tokens only, with no EOS appended: a non-terminal
step is a continuation, not the end of a sequence.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Annotated

import typer

from mcts_pref.console import stage
from mcts_pref.options import Seed, option
from mcts_pref.policy_spec import PolicySpec
from mcts_pref.errors import MctsPrefError
from mcts_pref.train import train

LOSS_TYPES = ("sigmoid", "ipo")
# Knobs that steer a run but not its result: a --resume may change these, not the others.
RUN_CONTROL = ("max_steps", "save_every", "resume", "overwrite", "gradient_checkpointing", "device")


@dataclass
class DpoConfig:
    """Every knob of one `train-dpo` run; the CLI options map one to one.

    Parameters:
        pairs (list[str]): pair JSONL files (several = replay of earlier rounds), in order.
        model (str): base model: Hugging Face id, local dir, or ``default``.
        out (str): output dir: the adapter, ``train_config.json``, ``metrics.jsonl``,
            ``ref_logps.pt`` (reference cache) and ``checkpoint/``.
        adapter (str | None = None): an adapter dir to keep training; the reference is
            still the base model with adapters disabled.
        loss (str = "sigmoid"): ``sigmoid`` (DPO / cDPO) or ``ipo``.
        beta (float = 0.1): KL strength; rewards are ``beta * (log pi - log ref)``.
        label_smoothing (float | None = None): override every pair's ``label_smoothing``
            (eps in [0, 0.5]); None uses each pair's own value (0 when absent).
        length_norm (bool = False): divide each log-prob by its token count.
        nll_weight (float = 0.0): add this times the chosen step's negative log-likelihood per
            token to the loss (TRL's ``rpo_alpha``): keeps the chosen step's own likelihood up,
            which DPO alone often lets fall along with the rejected one. 0 is plain DPO.
        terminal_eos (bool = True): end a step the pair marks terminal (``chosen_terminal`` /
            ``rejected_terminal``) with EOS; other steps never get one (they are continuations).
        max_length (int = 1024): tokens of prompt + step; longer prompts lose their start.
        lora_r (int = 8), lora_alpha (int = 16), lora_dropout (float = 0.0): LoRA shape.
        lora_targets (str = "q_proj,k_proj,v_proj,o_proj"): comma-separated module names.
        lr (float = 5e-5): peak AdamW learning rate. LoRA wants roughly 10-50x a full
            fine-tune's DPO rate (1e-6); higher overfits a few hundred pairs in 2 epochs.
        weight_decay (float = 0.0): AdamW weight decay.
        warmup_ratio (float = 0.1): fraction of steps of linear warmup before cosine decay to 0.
        max_grad_norm (float = 1.0): gradient clipping (0 disables).
        batch_size (int = 8): pairs per micro-batch per process (2x sequences per forward).
        grad_accum (int = 1): micro-batches per optimizer step.
        epochs (int = 2): passes over the pairs.
        max_steps (int | None = None): stop once this many optimizer steps are done and save a
            checkpoint; the schedule still spans ``epochs``, so ``--resume`` finishes the same run.
        save_every (int = 0): write ``checkpoint/`` every N optimizer steps (0: only on an early stop).
        resume (bool = False): continue from ``checkpoint/`` (start fresh when there is none).
        overwrite (bool = False): replace a finished or interrupted run in ``out``.
        gradient_checkpointing (bool = False): trade compute for activation memory.
        seed (int = 0): LoRA init, shuffling (one permutation per epoch) and dropout.
        dtype (str = "auto"), load_in_4bit (bool = False), trust_remote_code (bool = False),
        device (str = "auto"): auto | cpu | cuda (``cpu`` forces CPU). No ``cuda:N``: accelerate
            places the model, so GPUs are picked with CUDA_VISIBLE_DEVICES or ``accelerate launch``.
    """

    pairs: list[str]
    model: str
    out: str
    adapter: str | None = None
    loss: str = "sigmoid"
    beta: float = 0.1
    label_smoothing: float | None = None
    length_norm: bool = False
    nll_weight: float = 0.0
    terminal_eos: bool = True
    max_length: int = 1024
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: str = "q_proj,k_proj,v_proj,o_proj"
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    epochs: int = 2
    max_steps: int | None = None
    save_every: int = 0
    resume: bool = False
    overwrite: bool = False
    gradient_checkpointing: bool = False
    seed: int = 0
    dtype: str = PolicySpec.dtype
    load_in_4bit: bool = PolicySpec.load_in_4bit
    trust_remote_code: bool = PolicySpec.trust_remote_code
    device: str = PolicySpec.device
    targets: list[str] = field(init=False, repr=False)

    def result_knobs(self) -> dict:
        """The knobs that decide the trained weights (not the run control, not the file names)."""
        return {k: v for k, v in asdict(self).items() if k not in RUN_CONTROL + ("pairs", "out", "targets")}

    def __post_init__(self) -> None:
        if not self.pairs:
            raise MctsPrefError("give at least one pair file")
        if self.loss not in LOSS_TYPES:
            raise MctsPrefError(f"--loss must be one of {', '.join(LOSS_TYPES)}, got {self.loss!r}")
        if self.beta <= 0:
            raise MctsPrefError(f"--beta must be > 0, got {self.beta}")
        if self.nll_weight < 0:
            raise MctsPrefError(f"--nll-weight must be >= 0, got {self.nll_weight}")
        if self.label_smoothing is not None and not 0 <= self.label_smoothing <= 0.5:
            raise MctsPrefError(f"--label-smoothing must be in [0, 0.5], got {self.label_smoothing}")
        for name in ("batch_size", "grad_accum", "epochs", "lora_r", "max_length"):
            if getattr(self, name) < 1:
                raise MctsPrefError(f"--{name.replace('_', '-')} must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise MctsPrefError("--max-steps must be >= 1")
        if self.save_every < 0 or not 0 <= self.warmup_ratio < 1 or self.lr <= 0 or not 0 <= self.lora_dropout < 1:
            raise MctsPrefError("need --save-every >= 0, 0 <= --warmup-ratio < 1, --lr > 0 and 0 <= --lora-dropout < 1")
        if self.resume and self.overwrite:
            raise MctsPrefError("--resume and --overwrite contradict each other: pick one")
        if self.device not in ("auto", "cpu", "cuda"):
            raise MctsPrefError(f"train-dpo --device is auto | cpu | cuda (got {self.device!r}); "
                                "use CUDA_VISIBLE_DEVICES or accelerate launch to pick GPUs")
        self.targets = [t.strip() for t in self.lora_targets.split(",") if t.strip()]
        if not self.targets:
            raise MctsPrefError("--lora-targets is empty")


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
