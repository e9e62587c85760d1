"""The health check a load balancer polls: ``GET /healthz`` is 200 while serving, 503 once
shutdown has begun (then, after ``drain_delay`` seconds, the websockets get 1001).

A :class:`HealthCheck` is given to a server as the ``health`` option of
:class:`~wsloop.upgrade.ServeOptions`; every server flavour answers its path from its policy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["HealthCheck", "DEFAULT_HEALTH_PATH"]

logger = logging.getLogger("wsloop.server")

#: The path the command line's servers answer health checks at.
DEFAULT_HEALTH_PATH = "/healthz"


class HealthCheck:
    """Answers ``GET``/``HEAD`` on ``path`` (the query string ignored): ``200 ok`` while
    :attr:`serving`, ``503 draining`` after :meth:`drain` has begun.

    :param path: the request path answered (others are left to the server).
    :param drain_delay: seconds :meth:`drain` waits, answering 503 and still serving every
        websocket (and accepting new ones), before the server closes them with 1001.
    """

    def __init__(self, path: str = DEFAULT_HEALTH_PATH, drain_delay: float = 0.0) -> None:
        if not path.startswith("/"):
            raise ValueError(f"the health check's path must start with '/': {path!r}")
        if drain_delay < 0:
            raise ValueError("drain_delay must be 0 or more")
        self.path = path
        self.drain_delay = drain_delay
        #: False once shutdown has begun: health checks get 503 from then on.
        self.serving = True
        self._cut = threading.Event()

    def answer(self) -> tuple[int, bytes]:
        """The status and body a health check gets now."""
        return (200, b"ok\n") if self.serving else (503, b"draining\n")

    def drain(self, sleep: Callable[[float], object] | None = None) -> None:
        """Answer 503 from now on, then wait ``drain_delay`` seconds (at most: :meth:`cut_short`
        ends the wait) for load balancers to notice. ``sleep``: wait with this (a framework's
        own sleep, polled) instead of blocking the thread."""
        self.serving = False
        if self.drain_delay <= 0 or self._cut.is_set():
            return
        logger.info("draining: %s answers 503; closing the websockets in %g s", self.path, self.drain_delay)
        if sleep is None:
            self._cut.wait(self.drain_delay)
            return
        deadline = time.monotonic() + self.drain_delay
        while not self._cut.is_set() and time.monotonic() < deadline:
            sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def cut_short(self) -> None:
        """End :meth:`drain`'s wait now (a second SIGTERM or SIGINT)."""
        self.serving = False
        self._cut.set()

    def __repr__(self) -> str:
        state = "serving" if self.serving else "draining"
        return f"<HealthCheck {self.path} {state}, drain_delay={self.drain_delay:g}>"
