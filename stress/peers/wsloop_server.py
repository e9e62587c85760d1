"""wsloop under stress/bench.py, in any of its flavours: ``python wsloop_server.py FLAVOUR``.

Flavours: ``selectors``, ``threaded``, ``cherrypy``, ``gevent``, ``wsgiref``, ``asyncio``; ``--workers
N`` and ``--broker redis://...`` as the CLI's. Echoes every message; ``broadcast:<rest>`` sends
``<rest>`` to every connection with the flavour's broadcast facility. Compression is off. Prints
``PORT <n>`` once listening on 127.0.0.1; SIGTERM stops it (every connection closed with 1001).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from typing import Any

if len(sys.argv) > 1 and sys.argv[1] == "gevent":
    from gevent import monkey  # before wsloop is imported (see wsloop.servers.geventserver)

    monkey.patch_all()

from wsloop.poller.tuning import tune_malloc  # noqa: E402
from wsloop.websocket import WebSocket  # noqa: E402

TRIGGER = b"broadcast:"
FLAVOURS = ["selectors", "threaded", "cherrypy", "gevent", "wsgiref", "asyncio"]
MANAGER: Any = None  # the threaded poller's manager
OPEN: set[WebSocket] = set()  # the asyncio flavour's connections


class BenchWebSocket(WebSocket):
    """Echo, or broadcast the rest of a ``broadcast:`` text message."""

    compression = None

    def opened(self) -> None:
        if FLAVOUR == "asyncio":
            OPEN.add(self)

    def closed(self, code: int, reason: bytes | None = None) -> None:
        OPEN.discard(self)

    def received_data(self, data: bytes, binary: bool) -> None:
        # (received_data: the callback without a Message object, WebSocket.received_data)
        if not binary and data.startswith(TRIGGER):
            rest = data[len(TRIGGER) :].decode("utf-8")
            reactor = getattr(self.transport, "reactor", None)
            if reactor is not None:
                reactor.broadcast(rest)
            elif MANAGER is not None:
                MANAGER.broadcast(rest)
            else:
                for ws in list(OPEN):
                    ws.send(rest)
            return
        self.send(data, binary)


FLAVOUR = ""


def main() -> None:
    global FLAVOUR, MANAGER
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("flavour", choices=FLAVOURS)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--workers", type=int, default=1, help="selectors flavour: worker processes (wsloop.workers)"
    )
    parser.add_argument("--broker", default=None, help="selectors flavour: redis://host:port/db")
    args = parser.parse_args()
    FLAVOUR = args.flavour
    logging.basicConfig(level=logging.WARNING)
    tune_malloc()  # as python -m wsloop serve does (the library never does it on its own)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def ready(url: str) -> None:
        print(f"PORT {url.rstrip('/').rsplit(':', 1)[1]}", flush=True)

    if FLAVOUR == "selectors" and (args.workers > 1 or args.broker):
        from wsloop import workers
        from wsloop.servers import standalone

        options = {"compression": False, "broker": args.broker}
        if args.workers > 1:
            code = workers.run(args.workers, "127.0.0.1", args.port, BenchWebSocket, ready=ready, **options)
            sys.exit(code)
        standalone.serve("127.0.0.1", args.port, BenchWebSocket, ready=ready, stop=stop, **options)
        return
    if FLAVOUR in ("selectors", "threaded"):
        from wsloop.servers.standalone import WebSocketServer

        server = WebSocketServer("127.0.0.1", args.port, BenchWebSocket, poller=FLAVOUR, compression=False)
        MANAGER = server.manager
        server.start()
        ready(server.url)
        try:
            while not stop.wait(0.5):
                pass
        finally:
            server.stop()
        return
    module = importlib.import_module(f"wsloop.servers.{FLAVOUR}server")
    if FLAVOUR == "wsgiref":
        # wsgiref's listen backlog is 5 (socketserver's request_queue_size) and the adapter keeps
        # it: with 100 connects at once, connections whose final ACK met a full accept queue
        # stall. 1024, as the other servers here have (the ws4py peer gets the same).
        module.WSGIServer.request_queue_size = 1024
    module.serve("127.0.0.1", args.port, BenchWebSocket, ready=ready, stop=stop, compression=False)


if __name__ == "__main__":
    main()
