"""Drive ``kosoku -m fuzzingserver`` with the wsloop client, the way the Autobahn docs describe
testing a client: ``/getCaseCount``, then ``/runCase?case=N&agent=A`` for each case (echoing
every message back as it came), then ``/updateReports?agent=A``.

Usable by hand: ``python -m tests.support.autobahn_client ws://127.0.0.1:9001 [parallel]``.
"""

from __future__ import annotations

import sys
import threading

from wsloop.client import WebSocketClient
from wsloop.messaging import Message
from wsloop.poller import Reactor

AGENT = "wsloop"
CASE_TIMEOUT = 120.0


class EchoClient(WebSocketClient):
    max_message_size = None  # group 9 sends 16 MiB messages

    def received_message(self, message: Message) -> None:
        self.send(message.data, message.is_binary)


class _Counter(WebSocketClient):
    count = 0

    def received_message(self, message: Message) -> None:
        self.count = int(str(message))


def run_cases(base: str, reactor: Reactor, parallel: int = 1) -> int:
    """Run every case the fuzzing server offers; returns how many there were."""
    counter = _Counter(f"{base}/getCaseCount", reactor=reactor)
    counter.connect()
    counter.run_forever(CASE_TIMEOUT)
    total = counter.count
    gate = threading.Semaphore(parallel)
    clients: list[WebSocketClient] = []

    class Case(EchoClient):
        def closed(self, code: int, reason: bytes | None = None) -> None:
            gate.release()

    for number in range(1, total + 1):
        gate.acquire()
        client = Case(f"{base}/runCase?case={number}&agent={AGENT}", reactor=reactor)
        clients.append(client)
        client.connect(wait=False)
    for client in clients:
        if not client.run_forever(CASE_TIMEOUT):
            raise TimeoutError(f"case connection {client.url} did not end")
    reports = WebSocketClient(f"{base}/updateReports?agent={AGENT}", reactor=reactor)
    reports.connect()
    reports.close()
    reports.run_forever(CASE_TIMEOUT)
    return total


def main() -> None:
    base = sys.argv[1].rstrip("/")
    parallel = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    reactor = Reactor()
    reactor.start()
    try:
        print(run_cases(base, reactor, parallel), "cases run")
    finally:
        reactor.stop()


if __name__ == "__main__":
    main()
