"""Loopback ports and descriptors: a free port to hand a child process, whether a fixed port is
free, and this process's open descriptors (for leak checks)."""

from __future__ import annotations

import os
import socket


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
