"""A wall-clock limit for work that has no timeout of its own (a template loop, a client lock-up)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class DeadlineExpired(Exception):
    """Raised inside the block when its time is up."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise DeadlineExpired in the block after `seconds` (SIGALRM: the main thread only; elsewhere the
    block runs unbounded, so callers keep their own timeouts as the first line of defence)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum, frame):
        raise DeadlineExpired()

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
