"""Shared console objects and the error boundary every CLI command runs inside."""

from __future__ import annotations

import functools
import logging
import sys
import warnings

import typer
from rich.console import Console

from mcts_pref.errors import MctsPrefError

# Library chatter that says nothing actionable to our users: bitsandbytes
# on CPUs with AVX512-BF16 tries an optional hub kernel package at import, and
# peft calls a transformers method that transformers 5 renamed.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

# Loggers that libraries give a handler on stdout. DeepSpeed's LoggerFactory attaches
# StreamHandler(sys.stdout) to "DeepSpeed" when it is imported, and transformers imports
# it whenever DeepSpeed is installed, so every model stage printed "[WARNING] ... Setting
# accelerator to CPU" into its records. accelerate's loggers are listed so that a handler
# one of its versions adds goes the same way.
STDOUT_LOGGERS = ("DeepSpeed", "DS-Inference", "accelerate")


class _StderrLogger(logging.Logger):
    """A logger whose stream handlers write to stderr even when they are handed stdout."""

    def addHandler(self, hdlr: logging.Handler) -> None:
        _to_stderr(hdlr)
        super().addHandler(hdlr)


def _to_stderr(hdlr: logging.Handler) -> None:
    if isinstance(hdlr, logging.StreamHandler) and hdlr.stream in (sys.stdout, sys.__stdout__):
        hdlr.setStream(sys.stderr)


def route_loggers_to_stderr(names=STDOUT_LOGGERS) -> None:
    """Make the named loggers write to stderr; run before the libraries are imported.

    A logger not created yet is created now as a :class:`_StderrLogger`, so the
    handler the library adds at import lands on stderr; one that exists already
    has its stdout handlers moved.
    """
    before = logging.getLoggerClass()
    logging.setLoggerClass(_StderrLogger)
    try:
        for name in names:
            logger = logging.getLogger(name)
            for hdlr in logger.handlers:
                _to_stderr(hdlr)
    finally:
        logging.setLoggerClass(before)


route_loggers_to_stderr()

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
