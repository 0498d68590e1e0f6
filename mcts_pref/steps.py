"""Step splitting: a step is one line of a solution, ending with its newline.

Pure functions. Keeping the delimiter inside the step means that joining the
steps gives back the exact completion, so prefixes rebuilt from steps
tokenize the same way as the text the policy produced.
"""

from __future__ import annotations


def split_steps(completion: str) -> list[str]:
    """Split a completion into steps; blank lines stick to the step before them.

    ``"a\\nb\\n\\nc"`` -> ``["a\\n", "b\\n\\n", "c"]``; ``"".join`` of the result is the input.
    """
    steps: list[str] = []
    for line in completion.splitlines(keepends=True):
        if steps and not line.strip():
            steps[-1] += line
        elif not steps and not line.strip():
            steps.append(line)
        elif steps and not steps[-1].strip():
            steps[-1] += line  # leading blank lines join the first real step
        else:
            steps.append(line)
    return steps


def join_steps(steps: list[str]) -> str:
    return "".join(steps)
