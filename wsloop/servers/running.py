"""What every server flavour's ``serve()`` shares: its signature (:class:`ServeFunction`) and
the run-until-stopped part (:func:`run_until_stopped`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from ..upgrade import ServeOptions
from ..websocket import WebSocket

__all__ = ["ServeFunction", "run_until_stopped"]


class ServeFunction(Protocol):
    """``wsloop.servers.<flavour>.serve``, as the command line calls it: serve ``handler_cls``
    on ``host:port`` under ``options`` (the keyword arguments override them, under
    :class:`~wsloop.upgrade.ServeOptions`'s names; the standalone server takes a few more),
    call ``ready(url)`` once listening, return once ``stop`` is set and everything is closed."""

    def __call__(
        self,
        host: str,
        port: int,
        handler_cls: type[WebSocket],
        options: ServeOptions | None = None,
        *,
        ready: Callable[[str], None],
        stop: threading.Event,
        **option_kwargs: Any,
    ) -> None: ...


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
