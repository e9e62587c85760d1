"""Echo server on gevent's WSGI server: greenlets for the HTTP, wsloop's reactor for the
websockets.

    python examples/echo_gevent.py [--host 127.0.0.1] [--port 9000]

With the standard library monkey-patched (first thing, before anything else is imported), the
reactor runs as a greenlet in gevent's hub; without the patch it runs in a thread of its own.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402  (after the patch, as gevent asks)
import logging  # noqa: E402
import signal  # noqa: E402

import gevent  # noqa: E402

from wsloop.servers.geventserver import WSGIServer  # noqa: E402
from wsloop.servers.wsgiutils import WebSocketWSGIApplication  # noqa: E402
from wsloop.websocket import EchoWebSocket  # noqa: E402

logger = logging.getLogger("examples.echo_gevent")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    # ws4py's recipe: gevent's WSGIServer (wsloop's subclass) and a WSGI application that
    # upgrades every request to an EchoWebSocket.
    server = WSGIServer((args.host, args.port), WebSocketWSGIApplication(handler_cls=EchoWebSocket))
    server.start()  # listens (port 0: picks one) and starts the reactor

    # gevent runs a signal's handler in a greenlet: stop() closes every websocket with 1001,
    # then serve_forever() below returns.
    gevent.signal_handler(signal.SIGTERM, server.stop)
    gevent.signal_handler(signal.SIGINT, server.stop)
    logger.info("serving on ws://%s:%d/", server.server_host, server.server_port)
    server.serve_forever()


if __name__ == "__main__":
    main()
