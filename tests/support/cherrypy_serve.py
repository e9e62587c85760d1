"""``wsloop.servers.cherrypyserver.serve()`` in a child process, for tests/test_cherrypy.py.

``python -m tests.support.cherrypy_serve`` serves EchoWebSocket on a free port, prints the URL that
``ready`` gets, and returns from ``serve()`` (exit code 0) on SIGTERM or SIGINT.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from wsloop.servers.cherrypyserver import serve
from wsloop.websocket import EchoWebSocket


def main() -> None:
    stop = threading.Event()

    def _signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    serve("127.0.0.1", 0, EchoWebSocket, ready=lambda url: print(url, flush=True), stop=stop)
    print("serve() returned", flush=True)


if __name__ == "__main__":
    main()
