"""Run by tests/test_client.py in a fresh process: N wsloop clients on one reactor against the
server at URL; each sends one message, checks its echo and closes. Prints one JSON line:
threads before, right after connect(), at the peak, and the close codes seen.

``python -m tests.support.client_scale ws://127.0.0.1:PORT/ 5000``
"""

from __future__ import annotations

import json
import resource
import sys
import threading
from pathlib import Path

from wsloop.client import WebSocketClient
from wsloop.messaging import Message
from wsloop.poller import Reactor


def os_threads() -> int:
    return int(Path("/proc/self/status").read_text().split("Threads:")[1].split()[0])


def main() -> None:
    url, count = sys.argv[1], int(sys.argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 200)), hard))
    done = threading.Semaphore(0)
    peak = [0]
    echoed: list[bool] = []
    codes: dict[int, int] = {}

    class Counted(WebSocketClient):
        compression = None

        def opened(self) -> None:
            self.send(f"hello {id(self)}")

        def received_message(self, message: Message) -> None:
            echoed.append(str(message) == f"hello {id(self)}")
            peak[0] = max(peak[0], os_threads())
            self.close()

        def closed(self, code: int, reason: bytes | None = None) -> None:
            codes[code] = codes.get(code, 0) + 1
            done.release()

    before = os_threads()
    reactor = Reactor()
    reactor.start()
    clients = [Counted(url, reactor=reactor, handshake_timeout=60) for _ in range(count)]
    for client in clients:
        client.connect(wait=False)
    after_connect = os_threads()
    finished = all(done.acquire(timeout=120) for _ in range(count))
    reactor.stop(timeout=5)
    result = {
        "before": before,
        "after_connect": after_connect,
        "peak": peak[0],
        "finished": finished,
        "echoed": sum(echoed),
        "intact": all(echoed),
        "codes": codes,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
