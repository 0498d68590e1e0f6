"""Shared console objects and the error boundary every CLI command runs inside."""

from __future__ import annotations

import functools
import logging
import sys
import warnings

import typer
from rich.console import Console

from mcts_pref.records import MctsPrefError

# Library chatter that says nothing actionable to our users: bitsandbytes
# on CPUs with AVX512-BF16 tries an optional hub kernel package at import, and
# peft calls a transformers method that transformers 5 renamed.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

# Records go to stdout; everything for humans (progress, tables, warnings) to stderr,
# so `mcts-pref stage ... > out.jsonl` pipelines stay clean.
console = Console(stderr=True)


def fail(msg: str, code: int = 2) -> None:
    """One line on stderr, then exit with ``code``."""
    print(f"error: {msg}", file=sys.stderr)
    raise typer.Exit(code)


def stage(fn):
    """Run a command so that expected errors are one stderr line and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MctsPrefError as e:
            fail(str(e))
        except KeyboardInterrupt:
            fail("interrupted; rerun the same command to continue where it stopped", code=130)

    return wrapper
