"""Load from real clients for the stats and metrics tests, with the figures the clients expect.

:func:`run_load` runs websocket-client connections that each send messages, read the echoes and
close with a given code, plus upgrade requests refused with 400 and 403, and returns what a
server's figures must show for it (:class:`Expected`). :class:`Guarded` is the handler: an echo
that refuses ``/forbidden`` with 403. :func:`scrape` reads a Prometheus endpoint with
prometheus_client's own parser.
"""

from __future__ import annotations

import threading
import urllib.request
from dataclasses import dataclass, field

import websocket  # websocket-client

from wsloop.exc import HandshakeRejected
from wsloop.handshake import Request
from wsloop.websocket import EchoWebSocket

from .wsclient import raw_request, upgrade


class Guarded(EchoWebSocket):
    """An echo server's handler that refuses ``/forbidden`` with 403."""

    @classmethod
    def process_request(cls, request: Request) -> None:
        if request.path.startswith("/forbidden"):
            raise HandshakeRejected(403)


@dataclass
class Expected:
    """What the clients did, as a server's figures count it."""

    messages: int = 0  # each way (an echo)
    bytes_in: int = 0
    bytes_out: int = 0
    closes: dict[int, int] = field(default_factory=dict)
    refused: dict[int, int] = field(default_factory=dict)


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def run_load(
    port: int, clients: int = 6, messages: int = 100, size: int = 50, code: int = 4321, refusals: int = 2
) -> Expected:
    """``clients`` connections at once, each sending ``messages`` text messages of ``size`` bytes
    (under 126: one 2-byte header, 4-byte mask) and reading each echo, then closing with
    ``code``; then ``refusals`` bad requests (no key: 400) and as many to ``/forbidden`` (403)."""
    assert size < 126
    errors: list[BaseException] = []
    payload = "m" * size

    def client() -> None:
        try:
            ws = websocket.create_connection(f"ws://127.0.0.1:{port}/", timeout=10)
            for _ in range(messages):
                ws.send(payload)
                assert ws.recv() == payload
            ws.close(status=code)  # waits for the server's close frame
        except BaseException as exc:  # noqa: B036 - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    expected = Expected(
        messages=clients * messages,
        # Client frames: 2-byte header, 4-byte mask; its close frame: the code, no reason.
        bytes_in=clients * (messages * (size + 6) + 2 + 4 + 2),
        # Server frames: 2-byte header; its close frame echoes the code.
        bytes_out=clients * (messages * (size + 2) + 2 + 2),
        closes={code: clients},
    )
    for _ in range(refusals):
        for request in (upgrade(Sec_WebSocket_Key=None), upgrade(request_line="GET /forbidden HTTP/1.1")):
            status = _status(raw_request(port, request))
            expected.refused[status] = expected.refused.get(status, 0) + 1
    assert set(expected.refused) == {400, 403}, expected.refused
    return expected


def open_idle(port: int, count: int) -> list[websocket.WebSocket]:
    """``count`` open connections that send nothing (for the connections gauge)."""
    return [websocket.create_connection(f"ws://127.0.0.1:{port}/", timeout=10) for _ in range(count)]


def scrape(url: str) -> dict[str, float]:
    """The samples at ``url``, parsed by prometheus_client: ``name`` or ``name{label="v"}``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples
