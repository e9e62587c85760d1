"""A TCP-to-TLS relay, so that kosoku (which speaks no TLS) can drive a ``wss://`` server.

Each connection accepted on a plain loopback port is relayed, byte for byte, to the target over
TLS: the server under test does real TLS on every case, the relay only adds the encryption the
fuzzing client lacks. An end of stream is passed on as one (a half-close), so the suite's
closing-behaviour verdicts see which side closed first; a reset or TLS error ends both sides.

    python -m tests.tlsrelay 127.0.0.1:PORT CAFILE    # prints the plain port to point kosoku at
"""

from __future__ import annotations

import socket
import ssl
import struct
import sys
import threading

__all__ = ["TLSRelay"]

_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


class TLSRelay:
    """Listen on ``127.0.0.1:0``; relay each connection to ``target`` over TLS with ``context``."""

    def __init__(self, target: tuple[str, int], context: ssl.SSLContext, server_hostname: str = "localhost"):
        self.target = target
        self.context = context
        self.server_hostname = server_hostname
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port: int = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.listener.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                plain, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(plain,), daemon=True).start()

    def _connect(self, plain: socket.socket) -> None:
        try:
            raw = socket.create_connection(self.target, timeout=10)
            tls = self.context.wrap_socket(raw, server_hostname=self.server_hostname)
            tls.settimeout(None)
        except OSError:
            _reset(plain)
            return
        for sock in (plain, tls):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        done = threading.Barrier(2, action=lambda: (plain.close(), tls.close()))
        threading.Thread(target=_pump, args=(plain, tls, done), daemon=True).start()
        _pump(tls, plain, done)


def _pump(source: socket.socket, sink: socket.socket, done: threading.Barrier) -> None:
    """Copy ``source`` to ``sink`` until end of stream (then half-close ``sink``) or an error
    (then shut both down); the second of the two pumps to finish closes both sockets."""
    try:
        while True:
            data = source.recv(65536)
            if not data:
                sink.shutdown(socket.SHUT_WR)
                break
            sink.sendall(data)
    except OSError:
        for sock in (sink, source):
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the other pump
            except OSError:
                pass
    try:
        done.wait(timeout=60)
    except threading.BrokenBarrierError:
        pass


def _reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    except OSError:
        pass
    sock.close()


def main() -> None:
    host, _, port = sys.argv[1].rpartition(":")
    context = ssl.create_default_context(cafile=sys.argv[2])
    relay = TLSRelay((host, int(port)), context)
    print(relay.port, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
