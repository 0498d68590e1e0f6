"""Pure DPO: the loss, tokenisation and collation of pairs, batched step log-probs.

No typer, no files: the `train-dpo` command and its config are in
``train_dpo.py``, the loop (accelerate, reference cache) in ``train.py``,
checkpoints in ``checkpoint.py``. torch is imported inside the functions that
use it so that importing the CLI stays fast.

A pair record is ``{"prompt", "chosen", "rejected", "label_smoothing"?}``:
``prompt`` is the question prompt plus the shared prefix of steps, and
``chosen`` / ``rejected`` are the next step after it. The log-prob of a step
is summed over that step's tokens only, with no EOS appended: a non-terminal
step is a continuation, not the end of a sequence.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, NamedTuple

from mcts_pref.prompts import continuation_ids
from mcts_pref.errors import MctsPrefError

if TYPE_CHECKING:
    import torch

# --- loss ----------------------------------------------------------------------


class DpoLossOutput(NamedTuple):
    loss: torch.Tensor  # scalar: mean over pairs, the NLL term included
    losses: torch.Tensor  # (B,)
    chosen_rewards: torch.Tensor  # (B,) beta * (log pi - log ref) of the chosen step, detached
    rejected_rewards: torch.Tensor  # (B,)
    reward_acc: torch.Tensor  # scalar: fraction of pairs with chosen reward > rejected reward
    margin: torch.Tensor  # scalar: mean(chosen_rewards - rejected_rewards)
    nll: torch.Tensor  # scalar, detached: mean chosen-step NLL per token (nan without token counts)


def chosen_nll(policy_chosen: torch.Tensor, chosen_lengths: torch.Tensor) -> torch.Tensor:
    """The chosen step's length-normalised negative log-likelihood, ``-log pi(y_w | x) / |y_w|``, shape (B,).

    Nats per token; a step with no tokens counts as one token.
    """
    return -policy_chosen / chosen_lengths.clamp(min=1).to(policy_chosen.dtype)


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
    nll_weight: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
) -> DpoLossOutput:
    """DPO / conservative DPO / IPO loss of a batch of pairs (all inputs shape (B,), nats).

    With ``chosen_tokens`` and ``rejected_tokens`` (length normalisation) every
    log-prob is first divided by its step's token count. Then::

        chosen_logratio   = log pi(y_w | x) - log ref(y_w | x)
        rejected_logratio = log pi(y_l | x) - log ref(y_l | x)
        h = chosen_logratio - rejected_logratio

        sigmoid: L = -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)
        ipo:     L = (h - 1 / (2 * beta)) ** 2          (eps is ignored)

        L += nll_weight * (-log pi(y_w | x) / |y_w|)    (the NLL term, TRL's rpo_alpha)

        chosen_reward = beta * chosen_logratio,  rejected_reward = beta * rejected_logratio

    ``eps`` (``label_smoothing``, a float or a (B,) tensor in [0, 0.5]) is the
    probability that the preference label is flipped (cDPO): MCTS pairs get
    ``eps = N_rejected / (N_chosen + N_rejected)``, so a pair whose loser was
    barely explored is trusted more. eps = 0 is plain DPO.

    The NLL term (:func:`chosen_nll`) keeps the chosen step's own likelihood
    up: under DPO alone both log-probs usually fall together. ``|y_w|`` is
    ``chosen_lengths`` (else ``chosen_tokens``), the raw log-prob is used
    whether or not the DPO part is length-normalised, and the term is per
    pair, then averaged over pairs (TRL averages over all chosen tokens of a
    batch; the two agree when steps have equal length).
    """
    import torch
    import torch.nn.functional as F

    lengths = chosen_lengths if chosen_lengths is not None else chosen_tokens
    if nll_weight and lengths is None:
        raise ValueError("nll_weight needs the chosen steps' token counts (chosen_lengths)")
    nll = chosen_nll(policy_chosen, lengths) if lengths is not None else None
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
    if nll_weight:
        losses = losses + nll_weight * nll
    chosen_rewards = (beta * chosen_logratio).detach()
    rejected_rewards = (beta * rejected_logratio).detach()
    return DpoLossOutput(
        loss=losses.mean(),
        losses=losses,
        chosen_rewards=chosen_rewards,
        rejected_rewards=rejected_rewards,
        reward_acc=(chosen_rewards > rejected_rewards).float().mean(),
        margin=(chosen_rewards - rejected_rewards).mean(),
        nll=nll.detach().mean() if nll is not None else torch.tensor(float("nan"), device=h.device),
    )


# --- pairs, tokenisation, collation --------------------------------------------


def encode_pairs(tokenizer, pairs: list[dict], max_length: int, terminal_eos: bool = True) -> list[dict]:
    """Token ids of each pair: ``prompt``, ``chosen`` and ``rejected`` id lists, and ``eps``.

    The prompt gets the tokenizer's leading special tokens (BOS) unless its
    text already starts with them, as a chat-templated prompt does: the same
    ids the policy saw when it generated after this prompt, with no doubled
    BOS. Each step gets the ids the policy emits right after the prompt's
    (:func:`mcts_pref.prompts.continuation_ids`): those of ``prompt + step``
    past the prompt's own, so a SentencePiece tokenizer (Llama-2, Mistral)
    does not start the step with a "▁" the policy never generated; where
    byte-level BPE would merge the two across the boundary (a trailing space
    and the step's first characters), the step's own ids, which keeps the
    boundary exact. No EOS follows a step that the solution goes on
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
            ids = continuation_ids(tokenizer, pair["prompt"], pair[key])
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
