"""The run-until-stopped part every server flavour's ``serve()`` shares."""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["run_until_stopped"]


def run_until_stopped(
    stop: threading.Event,
    ready: Callable[[str], None],
    url: str,
    shutdown: Callable[[], None],
    sleep: Callable[[float], object] | None = None,
) -> None:
    """Call ``ready(url)``, wait until ``stop`` is set, then ``shutdown()`` (whatever happens in
    between). ``sleep``: poll ``stop`` with this (a framework's own sleep, where a blocking wait
    would stall its loop) instead of waiting on it."""
    try:
        ready(url)
        if sleep is None:
            while not stop.wait(0.5):
                pass
        else:
            while not stop.is_set():
                sleep(0.2)
    finally:
        shutdown()
