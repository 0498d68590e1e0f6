"""A real SentencePiece tokenizer, trained offline in a fraction of a second, wrapped as a Llama tokenizer.

Llama-2 and Mistral tokenize with SentencePiece: a text gets a leading "▁"
(a space), and a newline is the byte token ``<0x0A>``. This one is trained
the same way (BPE, byte fallback, split digits, whitespace kept) on a few kB
of the project's own prompt shapes, and handed to transformers'
``LlamaTokenizer`` as vocab + merges, read with the ``sentencepiece`` library
(transformers' own reader of ``tokenizer.model`` needs protobuf).
"""

from __future__ import annotations

import io
from pathlib import Path

from mcts_pref.prompts import DEFAULT_SHOTS, JUDGE_INSTRUCTION, JUDGE_PREFILL


def training_lines() -> list[str]:
    lines = []
    for a in range(1, 30):
        for b in range(1, 10):
            lines += [f"QUESTION: What is {a} + {b}?", "ANSWER:", f"{a} + {b} = {a + b}", f"The answer is {a + b}."]
    for shot in DEFAULT_SHOTS:
        lines += [shot["question"], *shot["rationale"].split("\n")] * 3
    # Standalone "A" and "B" become the pieces "▁A" and "▁B", as in Llama-2's vocabulary.
    lines += [*JUDGE_INSTRUCTION.split("\n"), JUDGE_PREFILL + "A", JUDGE_PREFILL + "B", "option A or option B",
              "Partial solution:"] * 5
    lines += ["x , y .", "so x , y , z ."] * 20  # spaces before punctuation: pieces "▁," and "▁."
    return lines


def train_sentencepiece(vocab_size: int = 400):
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_lines()), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, split_digits=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2,
    )
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def vocab_and_merges(sp) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The BPE vocabulary and merges of a SentencePiece BPE model.

    A BPE model's pieces are numbered in the order they were merged, so the
    merges are every split of a piece into two pieces, ordered by the id of
    the piece they make.
    """
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    merges = []
    for piece, i in vocab.items():
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i):
            continue
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in vocab and right in vocab:
                merges.append((i, vocab[left], vocab[right], left, right))
    return vocab, [(left, right) for *_, left, right in sorted(merges)]


def llama_tokenizer(sp, *, clean_up: bool = True):
    """``LlamaTokenizer`` over ``sp`` (BOS first, as Llama-2's); ``clean_up`` makes its default decode
    rewrite " ," to "," as Llama-3's does."""
    from transformers import LlamaTokenizer

    vocab, merges = vocab_and_merges(sp)
    extra = {"clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output": True} if clean_up else {}
    return LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, clean_up_tokenization_spaces=clean_up, **extra)


def tiny_llama(vocab_size: int, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2)
    return LlamaForCausalLM(cfg).eval()


def save_model_dir(out: Path, model, tok) -> Path:
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
