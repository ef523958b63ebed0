"""Wall-time budgets for work on untrusted files that Python cannot otherwise bound.

A pathological regular expression (an adapter's ``target_modules``), a template's nested loops
or a huge header run inside one library call; nothing but a signal stops them. ``deadline``
arms a timer signal in the main thread (where every command runs) and raises
``BudgetExceeded`` from whatever is running when it fires: regular-expression matching and
Python code both check for signals. In another thread it only runs the body.
``native_stderr_silenced`` keeps a native library's own report of a failure off the terminal.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class BudgetExceeded(Exception):
    """Work on an untrusted input went past its budget."""


# Native libraries (Rust tokenizers through pyo3) raise panics as BaseException subclasses;
# these are the only BaseExceptions that must pass through a boundary that catches the rest.
PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit)


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise ``BudgetExceeded`` inside the body once ``seconds`` have passed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise BudgetExceeded(f"more than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what native code writes to standard error (a Rust panic's message and backtrace,
    before Python sees the exception) to /dev/null for the body: the user gets our one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
