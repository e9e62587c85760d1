from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from wsloop.servers.standalone import WebSocketServer

POLLERS = ["selectors", "threaded"]


@pytest.fixture(params=POLLERS)
def poller(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def make_server(poller: str) -> Iterator[Callable[..., WebSocketServer]]:
    """Start a standalone server on a free loopback port; stopped after the test."""
    servers: list[WebSocketServer] = []

    def make(**options: Any) -> WebSocketServer:
        options.setdefault("poller", poller)
        server = WebSocketServer("127.0.0.1", 0, **options)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop(timeout=2)


@pytest.fixture
def server(make_server: Callable[..., WebSocketServer]) -> WebSocketServer:
    return make_server()


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))
