"""Echo server on an asyncio event loop: the loop serves the HTTP upgrade and the websockets.

    python examples/echo_asyncio.py [--host 127.0.0.1] [--port 9000]

``wsloop.async_websocket.WebSocket``'s callbacks may be coroutines, and its ``send()`` may be
awaited (it waits while the peer is slow to read).
"""

import argparse
import asyncio
import logging
import signal

from wsloop.async_websocket import EchoWebSocket, WebSocket
from wsloop.messaging import Message
from wsloop.servers.asyncioserver import WebSocketProtocol

logger = logging.getLogger("examples.echo_asyncio")


class AsyncEcho(WebSocket):
    """What EchoWebSocket does, written out: a coroutine callback that awaits its send."""

    async def received_message(self, message: Message) -> None:
        await self.send(message.data, message.is_binary)


async def serve(host: str, port: int, handler_cls: type[WebSocket]) -> None:
    loop = asyncio.get_running_loop()
    connections: set[WebSocketProtocol] = set()  # each protocol is in it while its connection is open
    # One WebSocketProtocol per connection, as with any asyncio server.
    server = await loop.create_server(
        lambda: WebSocketProtocol(handler_cls, connections=connections), host, port
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logger.info("serving on ws://%s:%d/", host, server.sockets[0].getsockname()[1])
    await stop.wait()

    # Stop accepting, send every client a close frame (1001), give the closing handshakes up to
    # 5 seconds, then drop whatever is left.
    server.close()
    for protocol in list(connections):
        protocol.shutdown(1001, "server shutting down")
    for _ in range(500):
        if not connections:
            break
        await asyncio.sleep(0.01)
    for protocol in list(connections):
        protocol.abort()
    logger.info("stopped")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--coroutines", action="store_true", help="echo with AsyncEcho's coroutine")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(args.host, args.port, AsyncEcho if args.coroutines else EchoWebSocket))


if __name__ == "__main__":
    main()
