"""Loopback ports and descriptors: a free port to hand a child process, whether a fixed port is
free, this process's open descriptors (for leak checks), and a raw socket past its WebSocket
handshake."""

from __future__ import annotations

import os
import socket

from wsloop.handshake import client_request, new_key


def free_port() -> int:
    """A loopback port nobody listens on now (for a child that needs its port given)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``port`` can be bound (connections in TIME_WAIT do not count: SO_REUSEADDR)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def open_fds() -> set[str]:
    """This process's open file descriptors (names in ``/proc/self/fd``)."""
    return set(os.listdir("/proc/self/fd"))


def read_101(sock: socket.socket, port: int) -> socket.socket:
    """Send a client handshake for ``127.0.0.1:port`` on ``sock`` (plain or TLS) and read the
    server's 101 byte by byte, so nothing after it is taken; ``sock`` is returned."""
    sock.sendall(client_request(f"127.0.0.1:{port}", "/", new_key()))
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        assert chunk, "closed during the handshake"
        data += chunk
    assert data.startswith(b"HTTP/1.1 101"), data
    return sock


def raw_upgraded(port: int, rcvbuf: int | None = None) -> socket.socket:
    """A raw loopback socket past its handshake with a server on ``port``, nothing after the 101
    read; ``rcvbuf``: its receive buffer, set before connecting (so the window stays small)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return read_101(sock, port)
