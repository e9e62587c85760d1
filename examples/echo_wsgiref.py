"""Echo server on the standard library's wsgiref: WSGI for the HTTP, wsloop's reactor for the
websockets.

    python examples/echo_wsgiref.py [--host 127.0.0.1] [--port 9000]

wsgiref's server reads the upgrade request and runs the WSGI application; once the application
accepts the upgrade, the connection leaves wsgiref for the reactor (one thread serves every
websocket), so the single-threaded HTTP server is free for the next request at once.
"""

import argparse
import logging
import signal
import threading
from wsgiref.simple_server import make_server

from wsloop.servers.wsgirefserver import WebSocketWSGIRequestHandler, WSGIServer
from wsloop.servers.wsgiutils import WebSocketWSGIApplication
from wsloop.websocket import EchoWebSocket

logger = logging.getLogger("examples.echo_wsgiref")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    # ws4py's recipe: wsloop's server and request handler classes, and a WSGI application that
    # upgrades every request to an EchoWebSocket.
    server = make_server(
        args.host,
        args.port,
        server_class=WSGIServer,
        handler_class=WebSocketWSGIRequestHandler,
        app=WebSocketWSGIApplication(handler_cls=EchoWebSocket),
    )
    server.initialize_websockets_manager()  # starts the reactor that serves the websockets

    # SIGTERM (what service managers send) and Ctrl-C: shutdown() ends serve_forever() once the
    # request in progress is done. It waits for that, so it runs in a thread of its own; raising
    # from the handler instead could land inside wsgiref's request handling, which catches it.
    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("serving on ws://%s:%d/", args.host, server.server_port)
    try:
        server.serve_forever()
    finally:
        server.server_close()  # stops the reactor: every websocket is closed with 1001


if __name__ == "__main__":
    main()
