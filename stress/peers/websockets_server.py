"""websockets under stress/bench.py: ``python websockets_server.py asyncio|sync``.

``asyncio``: ``websockets.asyncio.server.serve``; a text message ``broadcast:<rest>`` sends
``<rest>`` to every connection with ``websockets.asyncio.server.broadcast(server.connections,
...)``. ``sync``: ``websockets.sync.server.serve`` (a thread per connection); it has no broadcast
helper, so a broadcast is a loop of ``send()`` over the open connections. Every other message is
echoed. Compression off, no keepalive pings, messages up to 16 MiB, backlog 1024. Prints
``PORT <n>`` once listening on 127.0.0.1; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from typing import Any

TRIGGER = "broadcast:"
MAX_SIZE = 16 * 1024 * 1024


def run_asyncio(port: int) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    server: Any = None

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            if isinstance(message, str) and message.startswith(TRIGGER):
                broadcast(server.connections, message[len(TRIGGER) :])
            else:
                await ws.send(message)

    async def main() -> None:
        nonlocal server
        stop = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
        async with serve(
            handler, "127.0.0.1", port, compression=None, ping_interval=None, max_size=MAX_SIZE, backlog=1024
        ) as server:
            print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
            await stop

    asyncio.run(main())


def run_sync(port: int) -> None:
    from websockets.sync.server import ServerConnection, serve

    connections: set[ServerConnection] = set()
    lock = threading.Lock()

    def handler(ws: ServerConnection) -> None:
        with lock:
            connections.add(ws)
        try:
            for message in ws:
                if isinstance(message, str) and message.startswith(TRIGGER):
                    rest = message[len(TRIGGER) :]
                    with lock:
                        targets = list(connections)
                    for other in targets:
                        try:
                            other.send(rest)
                        except Exception:  # closed meanwhile
                            pass
                else:
                    ws.send(message)
        finally:
            with lock:
                connections.discard(ws)

    with serve(
        handler, "127.0.0.1", port, compression=None, ping_interval=None, max_size=MAX_SIZE, backlog=1024
    ) as server:
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
        print(f"PORT {server.socket.getsockname()[1]}", flush=True)
        server.serve_forever()
    sys.exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("flavour", choices=["asyncio", "sync"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    (run_asyncio if args.flavour == "asyncio" else run_sync)(args.port)


if __name__ == "__main__":
    main()
