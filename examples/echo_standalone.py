"""Echo server on wsloop's own server: no framework, one reactor thread for every connection.

    python examples/echo_standalone.py [--host 127.0.0.1] [--port 9000]

Every text or binary message a client sends comes back to it. A plain ``GET /`` in a browser
gets wsloop's demo page, which talks to this very server. Stop with Ctrl-C or SIGTERM: every
client is sent a close frame (1001) first.
"""

import argparse
import logging
import signal
import sys

from wsloop.servers.standalone import WebSocketServer
from wsloop.websocket import EchoWebSocket

logger = logging.getLogger("examples.echo_standalone")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    # EchoWebSocket's received_message() sends each message back. Subclass WebSocket (or
    # EchoWebSocket) and override opened(), received_message() and closed() for your own logic.
    server = WebSocketServer(args.host, args.port, EchoWebSocket)

    # SIGTERM (what service managers send) ends the process like Ctrl-C does: through the
    # finally below, which closes every websocket with 1001 before exiting.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    logger.info("serving on %s", server.url)  # port 0: the URL has the port picked
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
