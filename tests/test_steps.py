"""The one step-cutting rule: split_steps on text, StepCutter on token streams, and their agreement."""

import math
import random

import pytest

from mcts_pref.steps import ANSWER, EOS, LENGTH, STEP, STEP_CAP, TEXT_RULE, CutRule, StepCutter, join_steps, split_steps


@pytest.mark.parametrize("text, steps", [
    ("", []),
    ("a", ["a"]),
    ("a\n", ["a\n"]),
    ("a\nb", ["a\n", "b"]),
    ("a\nb\n\nc", ["a\n", "b\n", "\nc"]),  # a blank line starts the next step, as a decoder cuts it
    ("\n\na\nb\n", ["\n\na\n", "b\n"]),
    ("a\n\n", ["a\n", "\n"]),
    ("3 + 4 = 7\n7 + 2 = 9\nThe answer is 9.", ["3 + 4 = 7\n", "7 + 2 = 9\n", "The answer is 9."]),
])
def test_split_steps_round_trips(text, steps):
    assert split_steps(text) == steps
    assert join_steps(split_steps(text)) == text


# A toy vocabulary: every piece that holds a newline ends with it, so no token straddles a cut.
PIECES = ["<eos>", "\n", ".\n", " 7\n", "a", "b", " ", "+", "=", "3", "The answer is 5", "The answer is 5.\n", "\t", "  \n"]
TOY = CutRule(decode=lambda ids: "".join(PIECES[i] for i in ids),
              newline_ids=frozenset(i for i, p in enumerate(PIECES) if "\n" in p), eos_ids=frozenset({0}))


def cut_stream(ids: list[int], rule: CutRule = TOY, whole: bool = False) -> list[tuple[str, str]]:
    """Feed ``ids`` the way a search does: a fresh cutter per step, until EOS / answer / tokens run out."""
    steps, i = [], 0
    while i < len(ids):
        cutter = StepCutter(rule, whole=whole)
        while i < len(ids) and not cutter.feed(ids[i], -0.1):
            i += 1
        i += 1
        step = cutter.to_step()
        steps.append((step.text, step.finish))
        if step.terminal:
            break
    return steps


@pytest.mark.parametrize("seed", range(300))
def test_cutter_and_split_steps_agree_on_random_streams(seed):
    rng = random.Random(seed)
    ids = [rng.randrange(1, len(PIECES)) for _ in range(rng.randrange(0, 40))]
    if rng.random() < 0.3:
        ids.append(0)
    steps = [(t, f) for t, f in cut_stream(ids) if t]  # an EOS-only step has no text to split
    text = "".join(t for t, _ in steps)
    assert [t for t, _ in steps] == split_steps(text)[:len(steps)]
    # Without an answer line or EOS the stream is all steps; joining them gives the text back.
    if not any(f in (ANSWER, EOS) for _, f in steps):
        assert split_steps(text) == [t for t, _ in steps]
    for t, f in steps:
        if f == STEP:
            assert t.endswith("\n") and t.strip()


def test_cutter_finishes_and_log_probs():
    ids = [9, 6, 7, 6, 9, 6, 8, 2]  # "3 + 3 =.\n"
    c = StepCutter(TOY)
    assert [c.feed(i, -0.5) for i in ids] == [False] * 7 + [True]
    step = c.to_step()
    assert step.text == "3 + 3 =.\n" and step.finish == STEP
    assert step.logprob == pytest.approx(-4.0) and step.n_tokens == 8
    assert c.feed(4) is True and c.to_step().text == step.text  # nothing after the stop point

    c = StepCutter(TOY)
    for i in [1, 13]:  # blank lines do not end a step
        assert not c.feed(i)
    assert c.feed(11) and c.to_step().finish == ANSWER  # an answer line ends the solution

    c = StepCutter(TOY)
    assert not c.feed(10) and c.feed(0) and c.to_step().finish == ANSWER  # answer line then EOS
    assert c.to_step().text == "The answer is 5" and c.to_step().n_tokens == 1  # EOS is not text
    c = StepCutter(TOY)
    assert not c.feed(4) and c.feed(0) and c.to_step().finish == EOS

    c = StepCutter(TOY)
    c.feed(4)
    assert c.to_step().finish == STEP_CAP  # ran out of tokens mid-line
    c = StepCutter(TOY, whole=True)
    for i in [4, 1, 5, 1]:
        assert not c.feed(i)  # whole mode goes on past newlines
    assert c.to_step().finish == LENGTH
    c = StepCutter(TOY, whole=True)
    c.feed(10)
    assert c.to_step().finish == ANSWER  # capped right on an answer line


def test_the_eos_log_prob_counts_but_the_token_is_not_text():
    """An EOS-only step has the EOS's log-prob, so its prior is below 1 (it was exp(0) = 1)."""
    from mcts_pref.tree import prior

    c = StepCutter(TOY)
    assert c.feed(0, -2.0)
    step = c.to_step()
    assert (step.text, step.token_ids, step.finish) == ("", [], EOS)
    assert step.logprob == pytest.approx(-2.0)
    assert prior(step.logprob, step.n_tokens) == pytest.approx(math.exp(-2.0))  # n_tokens 0 counts as 1
    c = StepCutter(TOY)
    c.feed(4, -0.5)
    c.feed(0, -0.25)  # a step that ends on EOS: both log-probs
    assert c.to_step().logprob == pytest.approx(-0.75) and c.to_step().token_ids == [4]
    assert c.feed(0, -9.0) and c.to_step().logprob == pytest.approx(-0.75)  # nothing after the stop point
    c = StepCutter(TOY, whole=True)
    for i, lp in [(10, -1.0), (0, -0.5)]:  # an answer line, then EOS: ANSWER, EOS log-prob included
        c.feed(i, lp)
    assert c.to_step().finish == ANSWER and c.to_step().logprob == pytest.approx(-1.5)


def test_mcq_answer_lines_end_a_step_only_for_mcq():
    text = "Plants need light.\nAnswer: C\nmore"
    assert split_steps(text, "mcq") == ["Plants need light.\n", "Answer: C\n", "more"]
    c = StepCutter(TEXT_RULE, task="mcq")
    for ch in "Answer: C\n":
        done = c.feed(ord(ch))
    assert done and c.to_step().finish == ANSWER
    c = StepCutter(TEXT_RULE, task="math")
    for ch in "Answer: C\n":
        done = c.feed(ord(ch))
    assert done and c.to_step().finish == STEP


def test_a_token_holding_a_newline_and_more_stays_whole():
    """The documented exception: a model cannot emit half a token."""
    pieces = ["<eos>", "a", "\n\n", "b"]
    rule = CutRule(decode=lambda ids: "".join(pieces[i] for i in ids), newline_ids=frozenset({2}), eos_ids=frozenset({0}))
    assert cut_stream([1, 2, 3], rule) == [("a\n\n", STEP), ("b", STEP_CAP)]
    assert split_steps("a\n\nb") == ["a\n", "\nb"]


def test_cut_rule_from_a_real_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rule = CutRule.from_tokenizer(tok)
    text = "3 + 4 = 7\n7 + 2 = 9\nThe answer is 9."
    ids = tok(text, add_special_tokens=False).input_ids + [tok.eos_token_id]
    steps = cut_stream(ids, rule)
    assert [t for t, _ in steps] == split_steps(text) and steps[-1][1] == ANSWER
