"""A TCP-to-TLS relay, so that kosoku (which speaks no TLS) can drive a ``wss://`` server.

Each connection accepted on a plain loopback port is relayed, byte for byte, to the target over
TLS, on one asyncio loop in a thread of the relay's own.

    python -m tests.support.tlsrelay 127.0.0.1:PORT CAFILE    # prints the plain port for kosoku
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import threading

__all__ = ["TLSRelay"]


class TLSRelay:
    """Listen on ``127.0.0.1:0``; relay each connection to ``target`` over TLS with ``context``."""

    def __init__(
        self, target: tuple[str, int], context: ssl.SSLContext, server_hostname: str = "localhost"
    ) -> None:
        self.target = target
        self.context = context
        self.server_hostname = server_hostname
        self.loop = asyncio.new_event_loop()
        self.server = self.loop.run_until_complete(asyncio.start_server(self._relay, "127.0.0.1", 0))
        self.port: int = self.server.sockets[0].getsockname()[1]
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    async def _relay(self, plain_reader: asyncio.StreamReader, plain_writer: asyncio.StreamWriter) -> None:
        try:
            tls_reader, tls_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.target, ssl=self.context, server_hostname=self.server_hostname),
                30,
            )
        except (TimeoutError, OSError):
            plain_writer.transport.abort()
            return
        await asyncio.gather(
            _pump(plain_reader, tls_writer, half_close=False),
            _pump(tls_reader, plain_writer, half_close=True),
        )
        for writer in (plain_writer, tls_writer):
            writer.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, half_close: bool) -> None:
    """Copy until end of stream, then half-close (plain side) or close (TLS side) ``writer``;
    an error on either side aborts both."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if half_close:
            writer.write_eof()
        else:
            writer.close()
    except (OSError, ssl.SSLError, RuntimeError):
        writer.transport.abort()


def main() -> None:
    host, _, port = sys.argv[1].rpartition(":")
    relay = TLSRelay((host, int(port)), ssl.create_default_context(cafile=sys.argv[2]))
    print(relay.port, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
