import pytest

from mcts_pref.steps import join_steps, split_steps


@pytest.mark.parametrize("text, steps", [
    ("", []),
    ("a", ["a"]),
    ("a\n", ["a\n"]),
    ("a\nb", ["a\n", "b"]),
    ("a\nb\n\nc", ["a\n", "b\n\n", "c"]),
    ("\n\na\nb\n", ["\n\na\n", "b\n"]),
    ("3 + 4 = 7\n7 + 2 = 9\nThe answer is 9.", ["3 + 4 = 7\n", "7 + 2 = 9\n", "The answer is 9."]),
])
def test_split_steps_round_trips(text, steps):
    assert split_steps(text) == steps
    assert join_steps(split_steps(text)) == text
