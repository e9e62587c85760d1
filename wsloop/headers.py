"""HTTP header helpers shared by the handshake, permessage-deflate and the exceptions."""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus

__all__ = ["split_header_list", "status_phrase", "encode_head", "head_bytes"]


def split_header_list(value: str) -> list[str]:
    """Split a comma-separated header value, dropping empty items and surrounding spaces."""
    return [item.strip() for item in value.split(",") if item.strip()]


def status_phrase(status: int) -> str:
    """The reason phrase of an HTTP status (``"Not Found"``), or ``"Error"`` for an unknown one."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def encode_head(lines: list[str]) -> bytes:
    """An HTTP head from its start line and header lines."""
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def head_bytes(status_line: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """A response head: ``HTTP/1.1 <status_line>`` and ``headers``."""
    return encode_head([f"HTTP/1.1 {status_line}", *(f"{name}: {value}" for name, value in headers)])
