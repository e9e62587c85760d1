"""ws4py 0.6.0 under stress/bench.py: its wsgiref server and manager, as ws4py's docs show.

``make_server(..., server_class=WSGIServer, handler_class=WebSocketWSGIRequestHandler,
app=WebSocketWSGIApplication(handler_cls=...))`` then ``initialize_websockets_manager()``. A text
message ``broadcast:<rest>`` sends ``<rest>`` to every connection with ``server.manager.broadcast``;
anything else is echoed. ws4py has no permessage-deflate. Two departures from the docs' example:
the listen backlog is 1024 instead of wsgiref's 5 (``request_queue_size``, as every other server
here has), and request logging is off. Prints ``PORT <n>`` once listening on 127.0.0.1; SIGTERM
stops it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any
from wsgiref.simple_server import make_server

from ws4py.server.wsgirefserver import WebSocketWSGIRequestHandler, WSGIServer
from ws4py.server.wsgiutils import WebSocketWSGIApplication
from ws4py.websocket import WebSocket

TRIGGER = b"broadcast:"
SERVER: Any = None


class BenchWebSocket(WebSocket):  # type: ignore[misc]
    def received_message(self, message: Any) -> None:
        data = message.data
        if message.is_text and data.startswith(TRIGGER):
            SERVER.manager.broadcast(data[len(TRIGGER) :].decode("utf-8"))
        else:
            self.send(data, message.is_binary)


class Server(WSGIServer):  # type: ignore[misc]
    request_queue_size = 1024


class QuietHandler(WebSocketWSGIRequestHandler):  # type: ignore[misc]
    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    global SERVER
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    SERVER = make_server(
        "127.0.0.1",
        args.port,
        server_class=Server,
        handler_class=QuietHandler,
        app=WebSocketWSGIApplication(handler_cls=BenchWebSocket),
    )
    SERVER.initialize_websockets_manager()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=SERVER.shutdown).start())
    print(f"PORT {SERVER.server_port}", flush=True)
    SERVER.serve_forever()
    SERVER.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
