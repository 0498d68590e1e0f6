"""`train-dpo`: step-level DPO with label smoothing (cDPO) on LoRA adapters.

This module holds the pure parts: the config, the loss, tokenisation and
collation of pairs, and the batched log-probs of continuation tokens. The loop
(accelerate, checkpoints, reference cache) is in ``train.py``.

A pair record is ``{"prompt", "chosen", "rejected", "label_smoothing"?}``:
``prompt`` is the question prompt plus the shared prefix of steps, and
``chosen`` / ``rejected`` are the next step after it. The log-prob of a step
is summed over that step's tokens only, with no EOS appended: a non-terminal
step is a continuation, not the end of a sequence.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NamedTuple

import typer

from mcts_pref.console import stage
from mcts_pref.options import Adapter, Device, Dtype, LoadIn4bit, Model, Seed, TrustRemoteCode
from mcts_pref.records import MctsPrefError, dumps, read_records

if TYPE_CHECKING:
    import torch

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
        device (str = "auto"): model loading, as in every model stage (``cpu`` forces CPU).
    """

    pairs: list[str]
    model: str
    out: str
    adapter: str | None = None
    loss: str = "sigmoid"
    beta: float = 0.1
    label_smoothing: float | None = None
    length_norm: bool = False
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
    dtype: str = "auto"
    load_in_4bit: bool = False
    trust_remote_code: bool = False
    device: str = "auto"
    targets: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.pairs:
            raise MctsPrefError("give at least one pair file")
        if self.loss not in LOSS_TYPES:
            raise MctsPrefError(f"--loss must be one of {', '.join(LOSS_TYPES)}, got {self.loss!r}")
        if self.beta <= 0:
            raise MctsPrefError(f"--beta must be > 0, got {self.beta}")
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


# --- loss ----------------------------------------------------------------------


class DpoLossOutput(NamedTuple):
    loss: torch.Tensor  # scalar: mean over pairs
    losses: torch.Tensor  # (B,)
    chosen_rewards: torch.Tensor  # (B,) beta * (log pi - log ref) of the chosen step, detached
    rejected_rewards: torch.Tensor  # (B,)
    reward_acc: torch.Tensor  # scalar: fraction of pairs with chosen reward > rejected reward
    margin: torch.Tensor  # scalar: mean(chosen_rewards - rejected_rewards)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float | torch.Tensor = 0.0,
    loss_type: str = "sigmoid",
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
) -> DpoLossOutput:
    """DPO / conservative DPO / IPO loss of a batch of pairs (all inputs shape (B,), nats).

    With ``chosen_tokens`` and ``rejected_tokens`` (length normalisation) every
    log-prob is first divided by its step's token count. Then::

        chosen_logratio   = log pi(y_w | x) - log ref(y_w | x)
        rejected_logratio = log pi(y_l | x) - log ref(y_l | x)
        h = chosen_logratio - rejected_logratio

        sigmoid: L = -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)
        ipo:     L = (h - 1 / (2 * beta)) ** 2          (eps is ignored)

        chosen_reward = beta * chosen_logratio,  rejected_reward = beta * rejected_logratio

    ``eps`` (``label_smoothing``, a float or a (B,) tensor in [0, 0.5]) is the
    probability that the preference label is flipped (cDPO): MCTS pairs get
    ``eps = N_rejected / (N_chosen + N_rejected)``, so a pair whose loser was
    barely explored is trusted more. eps = 0 is plain DPO.
    """
    import torch
    import torch.nn.functional as F

    if chosen_tokens is not None and rejected_tokens is not None:
        c = chosen_tokens.clamp(min=1).to(policy_chosen.dtype)
        r = rejected_tokens.clamp(min=1).to(policy_rejected.dtype)
        policy_chosen, ref_chosen = policy_chosen / c, ref_chosen / c
        policy_rejected, ref_rejected = policy_rejected / r, ref_rejected / r
    chosen_logratio = policy_chosen - ref_chosen
    rejected_logratio = policy_rejected - ref_rejected
    h = chosen_logratio - rejected_logratio
    if loss_type == "sigmoid":
        eps = torch.as_tensor(label_smoothing, dtype=h.dtype, device=h.device)
        losses = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}")
    chosen_rewards = (beta * chosen_logratio).detach()
    rejected_rewards = (beta * rejected_logratio).detach()
    return DpoLossOutput(
        loss=losses.mean(),
        losses=losses,
        chosen_rewards=chosen_rewards,
        rejected_rewards=rejected_rewards,
        reward_acc=(chosen_rewards > rejected_rewards).float().mean(),
        margin=(chosen_rewards - rejected_rewards).mean(),
    )


# --- pairs, tokenisation, collation --------------------------------------------


@dataclass
class PairFile:
    path: str
    sha256: str
    n: int


def load_pairs(paths: list[str], label_smoothing: float | None = None) -> tuple[list[dict], list[PairFile]]:
    """Read and check every pair file before any model is loaded."""
    pairs: list[dict] = []
    files: list[PairFile] = []
    for path in paths:
        recs = read_records(path, "pair")
        if path == "-":
            digest = hashlib.sha256("\n".join(dumps(r) for r in recs).encode()).hexdigest()
        else:
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        for i, rec in enumerate(recs, 1):
            where = f"{path}: pair record {i}"
            for key in ("prompt", "chosen", "rejected"):
                if not isinstance(rec[key], str):
                    raise MctsPrefError(f"{where}: '{key}' must be a string")
            if not rec["chosen"] or not rec["rejected"]:
                raise MctsPrefError(f"{where}: empty 'chosen' or 'rejected' step")
            eps = rec.get("label_smoothing", 0.0) if label_smoothing is None else label_smoothing
            if not isinstance(eps, (int, float)) or not 0 <= eps <= 0.5:
                raise MctsPrefError(f"{where}: label_smoothing must be a number in [0, 0.5], got {eps!r}")
            pairs.append({"prompt": rec["prompt"], "chosen": rec["chosen"], "rejected": rec["rejected"],
                          "eps": float(eps), "chosen_terminal": bool(rec.get("chosen_terminal", False)),
                          "rejected_terminal": bool(rec.get("rejected_terminal", False))})
        files.append(PairFile(path, digest, len(recs)))
    if not pairs:
        raise MctsPrefError(f"no pairs to train on in {', '.join(paths)}")
    return pairs, files


def encode_pairs(tokenizer, pairs: list[dict], max_length: int, terminal_eos: bool = True) -> list[dict]:
    """Token ids of each pair: ``prompt``, ``chosen`` and ``rejected`` id lists, and ``eps``.

    The prompt gets the tokenizer's leading special tokens (BOS) unless its
    text already starts with them, as a chat-templated prompt does: the same
    ids the policy saw when it generated after this prompt, with no doubled
    BOS. Each step is tokenised on its own with ``add_special_tokens=False``
    and the ids concatenated after the prompt's. Tokenising ``prompt + step``
    as one string instead can merge tokens across the boundary (a trailing
    newline with the step's first characters), which would blur where the step
    starts; concatenating keeps the boundary exact and matches a step generated
    after the prompt's tokens. No EOS follows a step that the solution goes on
    after; with ``terminal_eos`` a step the pair marks terminal
    (``chosen_terminal`` / ``rejected_terminal``) ends with EOS, so the policy
    learns where a solution ends. When prompt + step exceed
    ``max_length`` the prompt loses tokens from its start (the latest steps
    matter most), and a step alone longer than that is cut.
    """
    with_special = tokenizer("x", add_special_tokens=True)["input_ids"]
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    lead = with_special[: len(with_special) - len(plain)] if with_special[-len(plain):] == plain else []
    out = []
    for pair in pairs:
        prompt = tokenizer(pair["prompt"], add_special_tokens=False)["input_ids"]
        if lead and prompt[: len(lead)] != lead:
            prompt = lead + prompt
        if not prompt:
            raise MctsPrefError("a pair's prompt tokenises to no tokens; a step needs a prompt to follow")
        enc = {}
        for key in ("chosen", "rejected"):
            ids = tokenizer(pair[key], add_special_tokens=False)["input_ids"]
            if terminal_eos and pair.get(f"{key}_terminal") and tokenizer.eos_token_id is not None:
                ids = ids + [tokenizer.eos_token_id]
            enc[key] = ids[: max_length - 1]
        keep = max_length - max(len(enc["chosen"]), len(enc["rejected"]))
        out.append({"prompt": prompt[-keep:], **enc, "eps": pair["eps"]})
    return out


def collate(batch: list[dict], pad_id: int) -> dict:
    """Right-padded sequences: every pair's chosen (rows 0..B-1) then rejected (B..2B-1).

    ``cont_mask[i, t]`` is True where token ``t + 1`` of row ``i`` belongs to
    the step, i.e. where the logits at ``t`` score a step token.
    """
    import torch

    seqs, starts = [], []
    for key in ("chosen", "rejected"):
        for enc in batch:
            seqs.append(enc["prompt"] + enc[key])
            starts.append(len(enc["prompt"]))
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    cont_mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, (s, p) in enumerate(zip(seqs, starts)):
        input_ids[i, : len(s)] = torch.tensor(s)
        attention_mask[i, : len(s)] = 1
        cont_mask[i, p - 1 : len(s) - 1] = True
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "cont_mask": cont_mask,
        "eps": torch.tensor([enc["eps"] for enc in batch], dtype=torch.float32),
        # The unpadded parts, for shared_prefix_logps.
        "prompts": [enc["prompt"] for enc in batch],
        "steps": [enc["chosen"] for enc in batch] + [enc["rejected"] for enc in batch],
        "pad_id": pad_id,
    }


def sequence_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log pi(token) over each row's step tokens, and the token counts, shape (2B,).

    Logits are projected only at the step positions (``logits_to_keep`` as a
    boolean mask, transformers >= 5), which saves the vocab-sized logits of
    long shared prefixes; log-softmax runs in float32.
    """
    import torch

    input_ids = batch["input_ids"].to(_device(model))
    attention_mask = batch["attention_mask"].to(input_ids.device)
    mask = batch["cont_mask"].to(input_ids.device)
    labels = torch.roll(input_ids, shifts=-1, dims=1)[mask]
    rows = mask.nonzero()[:, 0]
    if _keeps_logits_by_mask(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=mask).logits
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[mask]
    logits = logits.float()
    token_logps = logits.gather(-1, labels[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    sums = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=input_ids.device)
    sums = sums.index_add(0, rows, token_logps)
    counts = mask.sum(dim=1)
    return sums, counts


def shared_prefix_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """What :func:`sequence_logps` returns, encoding each pair's prompt once instead of twice.

    A pair's chosen and rejected steps follow the same prompt, which is most of
    the tokens (the exemplars, the question, the steps so far). The prompts go
    through the model once, left-padded; their KV cache (which keeps its
    autograd graph) is copied to the chosen and the rejected row; then only the
    steps are encoded on top. About half the compute of two full sequences when
    prompts are long. Not for DDP (two forwards per backward) nor gradient
    checkpointing (no cache then): the trainer uses sequence_logps there.
    """
    import inspect

    import torch
    from transformers import DynamicCache

    dev = _device(model)
    prompts, steps, pad = batch["prompts"], batch["steps"], batch["pad_id"]
    b, width = len(prompts), max(len(p) for p in prompts)
    p_ids = torch.full((b, width), pad, dtype=torch.long)
    p_mask = torch.zeros((b, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        p_ids[i, width - len(p):] = torch.tensor(p)
        p_mask[i, width - len(p):] = 1
    p_ids, p_mask = p_ids.to(dev), p_mask.to(dev)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cache_kw = "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"
    out = model(input_ids=p_ids, attention_mask=p_mask, position_ids=(p_mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=True, logits_to_keep=1, **{cache_kw: DynamicCache()})
    cache = getattr(out, "cache", None) or out.past_key_values
    rows = torch.arange(b, device=dev).repeat(2)  # chosen rows, then rejected rows
    cache.batch_select_indices(rows)
    first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)[rows]  # scores each step's first token

    c_width = max(1, max(len(s) for s in steps))
    s_ids = torch.full((2 * b, c_width), pad, dtype=torch.long)
    real = torch.zeros((2 * b, c_width), dtype=torch.bool)
    for i, s in enumerate(steps):
        s_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        real[i, : len(s)] = True
    s_ids, real = s_ids.to(dev), real.to(dev)
    mask = torch.cat([p_mask[rows], real.long()], dim=1)
    pos = p_mask.sum(-1)[rows][:, None] + torch.arange(c_width, device=dev)[None, :]
    logits = model(input_ids=s_ids, attention_mask=mask, position_ids=pos, use_cache=True,
                   **{cache_kw: cache}).logits[:, :-1, :].float()
    rest = logits.gather(-1, s_ids[:, 1:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    sums = first.gather(1, s_ids[:, :1]).squeeze(1) * real[:, 0] + (rest * real[:, 1:]).sum(dim=1)
    return sums, real.sum(dim=1)


def _device(model):
    return next(p.device for p in model.parameters())


def _keeps_logits_by_mask(model) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` and transformers slices by a boolean mask."""
    import inspect

    import torch
    import transformers.modeling_utils as mu

    wrapped = isinstance(model, torch.nn.parallel.DistributedDataParallel) or type(model).__name__ == "DeepSpeedEngine"
    base = model.module if wrapped else model
    if hasattr(base, "get_base_model"):  # peft
        base = base.get_base_model()
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False
    return hasattr(mu, "slice_logits_to_keep") and "logits_to_keep" in params


# --- the command ---------------------------------------------------------------


@stage
def command(
    pairs: Annotated[list[str], typer.Argument(help="Pair JSONL files (several = replay of earlier rounds); - for stdin.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output dir: LoRA adapter, train_config.json, metrics.jsonl.")],
    model: Model = "default",
    adapter: Adapter = None,
    loss: Annotated[str, typer.Option(help="sigmoid (DPO, cDPO with label smoothing) | ipo.")] = "sigmoid",
    beta: Annotated[float, typer.Option(help="KL strength beta.")] = 0.1,
    label_smoothing: Annotated[float | None, typer.Option(
        help="Override every pair's label_smoothing eps (0 = plain DPO); default: each pair's own.")] = None,
    length_norm: Annotated[bool, typer.Option("--length-norm", help="Divide each log-prob by its token count.")] = False,
    terminal_eos: Annotated[bool, typer.Option(
        help="End steps the pair marks terminal with EOS (non-terminal steps never get one).")] = True,
    max_length: Annotated[int, typer.Option(help="Max tokens of prompt + step; long prompts lose their start.")] = 1024,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha (scale = alpha / r).")] = 16,
    lora_dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = 0.0,
    lora_targets: Annotated[str, typer.Option(help="Comma-separated module names LoRA wraps.")] = "q_proj,k_proj,v_proj,o_proj",
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 5e-5,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.0,
    warmup_ratio: Annotated[float, typer.Option(help="Fraction of steps of linear warmup before cosine decay.")] = 0.1,
    max_grad_norm: Annotated[float, typer.Option(help="Gradient clipping norm (0 disables).")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Pairs per micro-batch per process.")] = 8,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 1,
    epochs: Annotated[int, typer.Option(help="Passes over the pairs.")] = 2,
    max_steps: Annotated[int | None, typer.Option(
        help="Stop after this many optimizer steps and save a checkpoint; --resume finishes the run.")] = None,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N optimizer steps into OUT/checkpoint (0: off).")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint (fresh start if none).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a finished or interrupted run in OUT.")] = False,
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing", help="Recompute activations in backward.")] = False,
    seed: Seed = 0,
    dtype: Dtype = "auto",
    load_in_4bit: LoadIn4bit = False,
    trust_remote_code: TrustRemoteCode = False,
    device: Device = "auto",
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
    cfg = DpoConfig(**{k: v for k, v in locals().items()})
    from mcts_pref.train import train

    train(cfg)
