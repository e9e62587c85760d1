"""A client that talks to an echo server on tornado's IOLoop: ws4py's tornado client API
(``pip install 'wsloop[tornado]'``).

    python examples/client_tornado.py [--url ws://127.0.0.1:9000/] [--count 5]

Sends ``--count`` text messages and one binary message from ``opened()``, prints each echo
(``text: ...``, ``binary: N bytes``), closes once every echo is in, and stops the IOLoop from
``closed()`` after printing ``closed: CODE``. Exits 1 if an echo is missing. Start a server
first, e.g. ``python examples/echo_standalone.py``.
"""

import argparse
import logging
import sys

from tornado import ioloop

from wsloop.client.tornadoclient import TornadoWebSocketClient
from wsloop.messaging import Message


class EchoClient(TornadoWebSocketClient):
    expected = 0  # messages still to come back; set before connect()

    def opened(self) -> None:
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
            self.close(1000, "done")

    def closed(self, code: int, reason: object = None) -> None:
        print(f"closed: {code}", flush=True)
        ioloop.IOLoop.instance().stop()  # every callback ran on the loop: nothing left to do


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="ws://127.0.0.1:9000/")
    parser.add_argument("--count", type=int, default=5, help="text messages to send")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    ws = EchoClient(args.url, protocols=["http-only", "chat"])
    ws.expected = args.count + 1
    ws.connect()  # starts connecting; the handshake and everything after run on the IOLoop
    ioloop.IOLoop.instance().start()  # returns once closed() has stopped it
    return 0 if ws.expected == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
