"""The ceiling of stress/bench.py: a TCP echo on one ``selectors`` loop, no WebSocket framing.

Prints ``PORT <n>`` once listening on 127.0.0.1 (``--port 0``: a free port); SIGTERM ends it.
"""

from __future__ import annotations

import argparse
import selectors
import signal
import socket
import sys

READ_SIZE = 262144


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listener = socket.create_server(("127.0.0.1", args.port), backlog=1024)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    pending: dict[socket.socket, bytearray] = {}  # unsent output of connections that would block
    buf = bytearray(READ_SIZE)
    view = memoryview(buf)
    print(f"PORT {listener.getsockname()[1]}", flush=True)

    def drop(sock: socket.socket) -> None:
        sel.unregister(sock)
        pending.pop(sock, None)
        sock.close()

    while True:
        for key, mask in sel.select():
            sock = key.fileobj
            if sock is listener:
                for _ in range(256):
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(conn, selectors.EVENT_READ, None)
                continue
            assert isinstance(sock, socket.socket)
            out = pending.get(sock)
            if mask & selectors.EVENT_WRITE and out:
                try:
                    sent = sock.send(out)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    drop(sock)
                    continue
                del out[:sent]
                if not out:
                    del pending[sock]
                    sel.modify(sock, selectors.EVENT_READ, None)
                continue
            if out:  # still blocked: read nothing more until it drains
                continue
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                continue
            except OSError:
                drop(sock)
                continue
            if not n:
                drop(sock)
                continue
            try:
                sent = sock.send(view[:n])
            except BlockingIOError:
                sent = 0
            except OSError:
                drop(sock)
                continue
            if sent < n:
                pending[sock] = bytearray(view[sent:n])
                sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, None)


if __name__ == "__main__":
    main()
