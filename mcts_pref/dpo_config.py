"""The config of one `train-dpo` run, :class:`DpoConfig`: every knob, its default and its checks.

The training loop (``train.py``) is typed by it; the command
(``train_dpo.py``) builds it from its options, which take their defaults
from here. Pure: no I/O, no typer, no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from mcts_pref.errors import MctsPrefError
from mcts_pref.policy_spec import PolicySpec

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
        dtype, load_in_4bit, trust_remote_code: as in :class:`~mcts_pref.policy_spec.PolicySpec`.
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
