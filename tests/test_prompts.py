"""Prompt texts and their token ids: the MCQ judgement question, continuations, the verdict ids."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from mcts_pref.prompts import continuation_ids, judge_prompt, judge_question, judge_token_ids, question_text
from mcts_pref.records import MctsPrefError

MCQ = {"id": "q1", "task": "mcq", "question": "What do plants need to make food?", "answer": "C",
       "choices": [{"label": "A", "text": "soil only"}, {"label": "B", "text": "darkness"},
                   {"label": "C", "text": "sunlight"}]}


def test_the_judgement_question_shows_the_choices():
    q = judge_question(MCQ)
    assert q == "What do plants need to make food?\n(A) soil only\n(B) darkness\n(C) sunlight"
    assert q == question_text(MCQ)  # exactly what the policy was asked
    prompt = judge_prompt(q, "Plants use light.\nAnswer: C\n", None, "plain")
    assert "(C) sunlight" in prompt and prompt.endswith("The steps so far are (")
    assert judge_question({"question": "  What is 2 + 2? "}) == "What is 2 + 2?"


@pytest.fixture(scope="module")
def bpe(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)  # SmolLM2's byte-level BPE


def ids(tok, text):
    return tok(text, add_special_tokens=False).input_ids


def test_continuation_ids_byte_level_bpe(bpe):
    # A clean boundary (after a newline): the whole text's ids past the prompt's.
    assert continuation_ids(bpe, "ANSWER:\n", "3 + 4 = 7\n") == ids(bpe, "ANSWER:\n3 + 4 = 7\n")[len(ids(bpe, "ANSWER:\n")):]
    # Merged across the boundary (" " + "$" is one token " $"): the step's own ids, which is what
    # the policy generated after the prompt's own ids.
    assert ids(bpe, "Total: $5")[: len(ids(bpe, "Total: "))] != ids(bpe, "Total: ")
    assert continuation_ids(bpe, "Total: ", "$5 each.\n") == ids(bpe, "$5 each.\n")
    # A step that starts with a blank line after a prompt ending in one: "\n\n" would merge.
    assert continuation_ids(bpe, "a\n", "\nThe answer is 5.") == ids(bpe, "\nThe answer is 5.")
    assert continuation_ids(bpe, "", "x y") == ids(bpe, "x y")


def test_continuation_ids_sentencepiece():
    from tests.sp_tokenizer import llama_tokenizer, train_sentencepiece

    tok = llama_tokenizer(train_sentencepiece())
    alone = ids(tok, "3 + 4 = 7\n")
    assert tok.convert_ids_to_tokens(alone)[0] == "▁"  # tokenized alone: a space the policy never wrote
    cont = continuation_ids(tok, "ANSWER:\n", "3 + 4 = 7\n")
    assert ids(tok, "ANSWER:\n") + cont == ids(tok, "ANSWER:\n3 + 4 = 7\n") and cont == alone[1:]
    assert tok.convert_ids_to_tokens(continuation_ids(tok, "are (", "A")) == ["A"]
    assert tok.convert_ids_to_tokens(continuation_ids(tok, "ANSWER:", " x")) == ["▁x"]  # a real space stays


class CharTokenizer:
    """One token per character; ``same`` maps characters to one shared id."""

    def __init__(self, same=""):
        self.same = same

    def __call__(self, text, add_special_tokens=False):
        return NS(input_ids=[0 if c in self.same else ord(c) for c in text])


def test_judge_token_ids():
    assert judge_token_ids(CharTokenizer(), "plain") == [ord("A"), ord("B")]
    with pytest.raises(MctsPrefError, match="same token"):
        judge_token_ids(CharTokenizer(same="AB"), "plain")
