"""The config of one `train-dpo` run, :class:`DpoConfig`: every knob, its default and its checks.

The training loop (``train.py``) is typed by it; the command
(``train_dpo.py``) builds its options from the fields here (each knob's
help and default) and gets it built from them. Pure: no I/O, no typer, no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from mcts_pref.errors import MctsPrefError
from mcts_pref.policy_spec import PolicySpec, knob

LOSS_TYPES = ("sigmoid", "ipo")
# Knobs that steer a run but not its result: a --resume may change these, not the others.
RUN_CONTROL = ("max_steps", "save_every", "resume", "overwrite", "gradient_checkpointing", "device")


@dataclass
class DpoConfig:
    """Every knob of one `train-dpo` run; the CLI options map one to one.

    A knob's meaning and default are its field's (the help of ``train-dpo``'s
    option of the same name). The other fields are options or arguments the
    command (``train_dpo.py``) declares itself: ``pairs`` (in order), ``out``
    (the output dir), the shared ``seed`` and the policy's ``model``,
    ``adapter``, ``dtype``, ``load_in_4bit``, ``trust_remote_code`` and
    ``device``, as in :class:`~mcts_pref.policy_spec.PolicySpec`. An adapter is
    trained further (the reference is still the base model with adapters
    disabled); ``device`` has no ``cuda:N``, as accelerate places the model.
    """

    pairs: list[str]
    model: str
    out: str
    adapter: str | None = None
    loss: str = knob("sigmoid", "sigmoid (DPO, cDPO with label smoothing) | ipo.")
    beta: float = knob(0.1, "KL strength beta: rewards are beta * (log pi - log ref).")
    label_smoothing: float | None = knob(None, "Override every pair's label_smoothing eps, in [0, 0.5] (0 = plain "
                                               "DPO); default: each pair's own (0 when absent).")
    length_norm: bool = knob(False, "Divide each log-prob by its token count.")
    nll_weight: float = knob(0.0, "Add W x the chosen step's NLL per token to the loss (TRL's rpo_alpha; 0 = plain "
                                  "DPO): keeps the chosen step's own likelihood up, which DPO alone often lets fall "
                                  "along with the rejected one's.")
    terminal_eos: bool = knob(True, "End steps the pair marks terminal (chosen_terminal / rejected_terminal) with "
                                    "EOS; other steps never get one (they are continuations).")
    max_length: int = knob(1024, "Max tokens of prompt + step; long prompts lose their start.")
    lora_r: int = knob(8, "LoRA rank.")
    lora_alpha: int = knob(16, "LoRA alpha (scale = alpha / r).")
    lora_dropout: float = knob(0.0, "LoRA dropout.")
    lora_targets: str = knob("q_proj,k_proj,v_proj,o_proj", "Comma-separated module names LoRA wraps.")
    lr: float = knob(5e-5, "Peak AdamW learning rate. LoRA wants roughly 10-50x a full fine-tune's DPO rate "
                           "(1e-6); higher overfits a few hundred pairs in 2 epochs.")
    weight_decay: float = knob(0.0, "AdamW weight decay.")
    warmup_ratio: float = knob(0.1, "Fraction of steps of linear warmup before cosine decay to 0.")
    max_grad_norm: float = knob(1.0, "Gradient clipping norm (0 disables).")
    batch_size: int = knob(8, "Pairs per micro-batch per process (2x sequences per forward).")
    grad_accum: int = knob(1, "Micro-batches per optimizer step.")
    epochs: int = knob(2, "Passes over the pairs.")
    max_steps: int | None = knob(None, "Stop after this many optimizer steps and save a checkpoint; the schedule "
                                       "still spans --epochs, so --resume finishes the same run.")
    save_every: int = knob(0, "Checkpoint every N optimizer steps into OUT/checkpoint (0: only when --max-steps "
                              "stops the run early).")
    resume: bool = knob(False, "Continue from OUT/checkpoint (fresh start if none).")
    overwrite: bool = knob(False, "Replace a finished or interrupted run in OUT.")
    gradient_checkpointing: bool = knob(False, "Recompute activations in backward: trades compute for activation "
                                               "memory.")
    seed: int = 0  # LoRA init, shuffling (one permutation per epoch) and dropout
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
