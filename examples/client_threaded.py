"""A client that talks to an echo server: ws4py's threaded client API.

    python examples/client_threaded.py [--url ws://127.0.0.1:9000/] [--count 5]

Sends ``--count`` text messages and one binary message, prints each echo as it comes back
(``text: ...``, ``binary: N bytes``), closes once every echo is in and prints ``closed: CODE``.
Exits 1 if the connection ends before that, 2 if it cannot connect. Start a server first, e.g.
``python examples/echo_standalone.py``.
"""

import argparse
import logging
import sys

from wsloop.client.threadedclient import WebSocketClient
from wsloop.exc import HandshakeError
from wsloop.messaging import Message

logger = logging.getLogger("examples.client_threaded")


class EchoClient(WebSocketClient):
    expected = 0  # messages still to come back; set before connect()

    def opened(self) -> None:
        # Called once the opening handshake is done; sending from here is fine.
        for i in range(self.expected - 1):
            self.send(f"message {i}")
        self.send(bytes(range(256)) * 4, binary=True)

    def received_message(self, message: Message) -> None:
        if message.is_binary:
            print(f"binary: {len(message.data)} bytes", flush=True)
        else:
            print(f"text: {message}", flush=True)
        self.expected -= 1
        if self.expected == 0:
            self.close(1000, "done")  # the closing handshake; closed() follows

    def closed(self, code: int, reason: object = None) -> None:
        print(f"closed: {code}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="ws://127.0.0.1:9000/")
    parser.add_argument("--count", type=int, default=5, help="text messages to send")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    ws = EchoClient(args.url)
    ws.expected = args.count + 1
    try:
        ws.connect()  # the opening handshake: raises if the server refuses or is not there
    except (OSError, HandshakeError) as exc:
        logger.error("cannot connect to %s: %s", args.url, exc)
        return 2
    try:
        ws.run_forever()  # returns once the connection has ended
    except KeyboardInterrupt:
        ws.close()
    return 0 if ws.expected == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
