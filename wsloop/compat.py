"""ws4py's ``compat`` module (the Python 2/3 names its users may import), for Python 3 only."""

from __future__ import annotations

import builtins
import socket
from typing import IO, Any
from urllib.parse import urlsplit

__all__ = ["py3k", "urlsplit", "range", "unicode", "basestring", "get_connection", "detach_connection", "ord"]

py3k = True
range = builtins.range
unicode = str
basestring = (bytes, str)


def get_connection(fileobj: Any) -> socket.socket:
    """The socket under a file object made by ``socket.makefile()`` (buffered, binary)."""
    return fileobj.raw._sock  # type: ignore[no-any-return]


def detach_connection(fileobj: IO[bytes]) -> None:
    """Detach a buffered file object from its raw stream, leaving the socket open."""
    fileobj.detach()  # type: ignore[attr-defined]


def ord(c: int | str | bytes) -> int:
    """``c`` if it is already an int (an item of ``bytes``), else ``builtins.ord(c)``."""
    if isinstance(c, int):
        return c
    return builtins.ord(c)
