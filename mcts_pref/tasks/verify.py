"""Symbolic answer equivalence (math-verify) in a persistent worker process.

Symbolic checking of model text is the one place where a single answer can
hang or exhaust memory (``9^{9^{9^{9}}}`` makes SymPy try to build a number
with more digits than there are atoms). math-verify's own guard is
``signal.alarm`` with whole seconds, which only works in the main thread and
cannot stop C-level work. So the check runs in a child process instead:

- the parent sends one JSON line ``{"gold": ..., "pred": ...}`` and waits on
  the pipe with a wall-time limit;
- the child answers ``{"equal": bool}`` (or ``{"error": ...}``);
- on timeout the parent kills the child and at once spawns the next one,
  which imports its libraries while the parent goes on; so one bad answer
  costs at most ``timeout`` seconds, and the next request rarely waits for
  a start-up.

The child is started lazily: purely numeric scoring never spawns it. Gold
and prediction are parsed the same way, with math-verify's ``parse`` and its
LaTeX extraction config. Its expression config is left out on purpose: it
hands text to SymPy's ``parse_expr``, i.e. Python ``eval``, and model text is
never evaluated. Measured on benchmarks/math_agreement.py's 312 cases, the
expression config would change one verdict.

Run ``python -m mcts_pref.tasks.verify`` to start a worker by hand; it speaks
the protocol above on stdin/stdout.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from mcts_pref.errors import MctsPrefError

# Importing sympy + math-verify takes ~1 s; the limit only guards a broken install.
STARTUP_TIMEOUT_S = 60.0
# The child's address-space cap: sympy needs < 100 MB, so 2 GiB only stops runaways.
WORKER_MEMORY_BYTES = 2 << 30


# ---------------------------------------------------------------- worker side


def _configs() -> list:
    from math_verify import LatexExtractionConfig

    return [LatexExtractionConfig()]


def parse_answer(text: str, configs: list) -> list:
    """math-verify's parse of one extracted answer (child only).

    The answer goes in inside ``\\boxed{}``, so that extraction anchors on
    exactly this text and math-verify's LaTeX clean-up runs on it (``\\left``,
    ``\\dfrac``, ``\\text{units}``, ``\\frac13``, ``\\%``). Timeouts are ours
    (the parent kills this process), so math-verify's are off.
    """
    from math_verify import parse

    return parse("\\boxed{" + text + "}", extraction_config=configs, fallback_mode="no_fallback",
                 parsing_timeout=None)


def _answers_equal(gold: str, pred: str, configs: list) -> bool:
    """math-verify equivalence of two normalised answers (child only)."""
    from math_verify import verify

    g, p = parse_answer(gold, configs), parse_answer(pred, configs)
    if not g or not p:
        return False
    return bool(verify(g, p, timeout_seconds=None))


def serve() -> None:
    """Worker loop: one JSON request per stdin line, one JSON reply per line."""
    # Keep the protocol channel private: libraries that print would corrupt it.
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    try:
        import logging

        import math_verify  # noqa: F401  (import cost paid before "ready")

        logging.getLogger("math_verify").setLevel(logging.ERROR)
        logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
        configs = _configs()
        _answers_equal("1", "1", configs)  # warm the parser so the first real check is not slow
    except Exception as e:  # report, so the parent can fail with a readable message
        proto.write(json.dumps({"ready": False, "error": f"{type(e).__name__}: {e}"}) + "\n")
        proto.flush()
        return
    proto.write(json.dumps({"ready": True}) + "\n")
    proto.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            reply = {"equal": _answers_equal(str(req["gold"]), str(req["pred"]), configs)}
        except Exception as e:  # noqa: BLE001  (MemoryError, RecursionError, parser bugs)
            reply = {"error": f"{type(e).__name__}"}
        proto.write(json.dumps(reply) + "\n")
        proto.flush()


# ---------------------------------------------------------------- parent side

_TIMEOUT, _EOF = "timeout", "eof"


class VerifyWorker:
    """A lazily started child process that answers symbolic equivalence checks.

    Thread-safe (one request at a time). ``equal`` returns ``(equal, reason)``
    with reason ``None`` (compared), ``"timeout"`` (killed after ``timeout``
    seconds) or ``"verifier_error"`` (the checker crashed on this input).
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._ready = False  # the child's "ready" line has been read
        self._buf = b""
        self._lock = threading.Lock()
        self.starts = 0  # how many children were spawned (tests, diagnostics)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _spawn(self) -> None:
        env = dict(os.environ)
        # The child imports this module by name; make the package importable
        # even when the parent runs from a source tree that is not installed.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "mcts_pref.tasks.verify"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env, bufsize=0, close_fds=True,
        )
        self._buf, self._ready = b"", False
        self.starts += 1

    def _start(self) -> None:
        """Make sure a child is running and has said it is ready."""
        if not self.running:
            self._kill()
            self._spawn()
        if self._ready:
            return
        hello = self._read(STARTUP_TIMEOUT_S)
        if not isinstance(hello, dict) or hello.get("ready") is not True:
            detail = hello.get("error") if isinstance(hello, dict) else hello
            self._kill()
            raise MctsPrefError(f"the math-verify worker did not start ({detail}); is math-verify installed?")
        self._ready = True

    def _kill(self) -> None:
        if self._proc is not None:
            try:
                self._proc.kill()
            except OSError:
                pass
            self._proc.wait()
            for stream in (self._proc.stdin, self._proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
        self._proc, self._buf, self._ready = None, b"", False

    def _read(self, timeout: float):
        """One reply line as a dict, or ``_TIMEOUT`` / ``_EOF``."""
        deadline = time.monotonic() + timeout
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return _TIMEOUT
            chunk = os.read(fd, 65536)
            if not chunk:
                return _EOF
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return _EOF

    def equal(self, gold: str, pred: str, timeout: float = 1.0) -> tuple[bool, str | None]:
        """Is ``pred`` symbolically equal to ``gold``? Waits at most ``timeout`` s
        (plus a start-up of about a second when no child is ready yet)."""
        request = (json.dumps({"gold": gold, "pred": pred}) + "\n").encode("utf-8")
        with self._lock:
            for attempt in range(2):
                self._start()
                try:
                    self._proc.stdin.write(request)
                    break
                except (BrokenPipeError, OSError):
                    self._kill()  # died between requests: restart once
                    if attempt:
                        return False, "verifier_error"
            reply = self._read(timeout)
            if reply is _TIMEOUT:
                self._kill()
                self._spawn()  # imports while the caller goes on
                return False, "timeout"
            if reply is _EOF or "equal" not in reply:
                if reply is _EOF:
                    self._kill()  # crashed (e.g. a C stack overflow): next call restarts
                return False, "verifier_error"
            return bool(reply["equal"]), None

    def close(self) -> None:
        with self._lock:
            self._kill()


_worker: VerifyWorker | None = None


def worker() -> VerifyWorker:
    """The process-wide worker (created on first use, closed at exit)."""
    global _worker
    if _worker is None:
        _worker = VerifyWorker()
        atexit.register(_worker.close)
    return _worker


def symbolic_equal(gold: str, pred: str, timeout: float = 1.0) -> tuple[bool, str | None]:
    """Symbolic check through the shared worker; see ``VerifyWorker.equal``."""
    return worker().equal(gold, pred, timeout)


if __name__ == "__main__":
    serve()
