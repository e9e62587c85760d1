"""A client that talks to an echo server from greenlets: ws4py's gevent client API.

    python examples/client_gevent.py [--url ws://127.0.0.1:9000/] [--count 5]

One greenlet sends ``--count`` text messages and one binary message; another takes the echoes
from the client's queue with ``receive()`` and prints them (``text: ...``, ``binary: N bytes``),
closes once every echo is in, and reads on until ``receive()`` returns None (the connection has
ended); then ``closed: CODE`` is printed. Exits 1 if an echo is missing. Start a server first,
e.g. ``python examples/echo_standalone.py``.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402  (after the patch, as gevent asks)
import logging  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402

from wsloop.client.geventclient import WebSocketClient  # noqa: E402


class Client(WebSocketClient):
    close_code: int | None = None

    def closed(self, code: int, reason: object = None) -> None:
        self.close_code = code
        super().closed(code, reason)  # the base class puts the end marker in the queue


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="ws://127.0.0.1:9000/")
    parser.add_argument("--count", type=int, default=5, help="text messages to send")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    ws = Client(args.url)
    ws.connect()
    expected = args.count + 1

    def outgoing() -> None:
        for i in range(args.count):
            ws.send(f"message {i}")
        ws.send(bytes(range(256)) * 4, binary=True)

    def incoming() -> None:
        nonlocal expected
        while True:
            message = ws.receive()  # blocks this greenlet only; None once the connection ended
            if message is None:
                break
            if message.is_binary:
                print(f"binary: {len(message.data)} bytes", flush=True)
            else:
                print(f"text: {message}", flush=True)
            expected -= 1
            if expected == 0:
                ws.close(1000, "done")

    gevent.joinall([gevent.spawn(incoming), gevent.spawn(outgoing)], raise_error=True)
    print(f"closed: {ws.close_code}", flush=True)
    return 0 if expected == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
