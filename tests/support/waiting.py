"""Waiting in the tests for something another thread or process does: the one polling helper.

:func:`wait_for` fails the test (AssertionError naming what it waited for) when the condition does
not hold in time; :func:`eventually` says whether it held, for a caller that asserts with its own
message. Both check the condition every 5 ms, and once more after the timeout has passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

POLL = 0.005  # seconds between two checks


def eventually(predicate: Callable[[], object], timeout: float = 10.0) -> bool:
    """Whether ``predicate()`` is true within ``timeout`` seconds (polled every 5 ms)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL)
    return True


def wait_for(predicate: Callable[[], object], what: str = "condition", *, timeout: float = 10.0) -> None:
    """Return once ``predicate()`` is true; raise AssertionError naming ``what`` after ``timeout`` s."""
    if not eventually(predicate, timeout):
        raise AssertionError(f"not reached within {timeout:g} s: {what}")
