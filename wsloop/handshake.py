"""The opening handshake (RFC 6455 §4), for servers and clients, free of I/O.

Server side: :func:`parse_request` turns the bytes of an HTTP/1.1 request into a
:class:`Request` (or ``None`` while the header section is incomplete); :func:`validate_request`
checks it is a WebSocket upgrade, raising :class:`~wsloop.exc.HandshakeError` with the HTTP
status to answer; :func:`accept_response` builds the 101 and :func:`error_response` any other
answer. :func:`accept` does all of it for a server, and applies a :class:`HandshakePolicy` (the
handler class's ``origins``, ``process_request`` and ``select_subprotocol`` hooks). Client side:
:func:`client_request` and :func:`validate_response`. The standalone server, every framework
adapter and the client all use these.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import sys
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from .deflate import DeflateOptions, PerMessageDeflate, negotiate
from .exc import HandshakeError
from .headers import encode_head, split_header_list, status_phrase

__all__ = [
    "GUID",
    "MAX_HEADER_SIZE",
    "Request",
    "Response",
    "parse_request",
    "validate_request",
    "validate_key",
    "accept_value",
    "select_subprotocol",
    "accept_headers",
    "accept_response",
    "accept",
    "Accepted",
    "HandshakePolicy",
    "origin_allowed",
    "error_response",
    "http_response",
    "status_phrase",
    "new_key",
    "client_headers",
    "client_request",
    "request_head",
    "parse_response",
    "validate_response",
    "split_header_list",
    "environ_of",
    "LazyEnviron",
]

logger = logging.getLogger("wsloop.handshake")

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEADER_SIZE = 16 * 1024
SUPPORTED_VERSION = "13"


@dataclass
class Request:
    """An HTTP request head: request line and headers (names lower-cased, repeated ones joined)."""

    method: str
    path: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)
    raw_headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.headers.get("sec-websocket-key", "")

    @property
    def protocols(self) -> list[str]:
        """The subprotocols the client offers, in its order of preference."""
        return split_header_list(self.headers.get("sec-websocket-protocol", ""))

    @property
    def extensions(self) -> list[str]:
        """The extension offers, each as its raw text (``permessage-deflate; ...``)."""
        return split_header_list(self.headers.get("sec-websocket-extensions", ""))

    @property
    def is_upgrade(self) -> bool:
        """Whether the request asks for a WebSocket upgrade at all (valid or not)."""
        return "upgrade" in self.headers or "sec-websocket-key" in self.headers


@dataclass
class Response:
    """An HTTP response head, as the client reads it."""

    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)


# RFC 9110 §5.6.2 token (a field name, a method); the field lines after the start line
# (RFC 9112 §5), each CRLF, name, colon, a value of visible characters, spaces and tabs (obs-text
# allowed) and no other control character (so no NUL, no bare CR or LF), matched in one pass
# (each value stops at the next CR, so there is no backtracking); a request line (RFC 9112 §3)
# in origin form; a Host value (RFC 3986 uri-host, with its port).
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_FIELD_LINES = re.compile(rf"(?:\r\n{_TOKEN}:[\t\x20-\x7e\x80-\xff]*)*").fullmatch
_METHOD = re.compile(_TOKEN).fullmatch
_TARGET = re.compile(r"[^\x00-\x20\x7f]+").fullmatch
_VERSION = re.compile(r"HTTP/[0-9]\.[0-9]").fullmatch
_HOST = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,;=:\[\]]*").fullmatch
# A whole ASCII request head at once: method, origin-form target, version, then the field lines
# as _FIELD_LINES takes them; _FIELDS splits those into (name, value with no leading blanks).
_REQUEST_HEAD = re.compile(
    rf"({_TOKEN}) (/[^\x00-\x20\x7f]*) (HTTP/[0-9]\.[0-9])((?:\r\n{_TOKEN}:[\t\x20-\x7e]*)*)"
).fullmatch
_FIELDS = re.compile(r"\r\n([^:]+):[\t ]*([^\r]*)").findall


def _parse_head(data: bytes, max_size: int) -> tuple[str, list[tuple[str, str]], int] | None:
    """Split an HTTP head into its start line and headers; ``None`` while incomplete.

    A malformed field line is a 400 (RFC 9112 §5): whitespace or a control character in a name,
    a control character other than HTAB in a value (a bare CR or LF too), obs-fold."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > max_size:
            raise HandshakeError("request header section too large", 431)
        return None
    if end + 4 > max_size:
        raise HandshakeError("request header section too large", 431)
    try:
        text = data[:end].decode("ascii")
    except UnicodeDecodeError:
        # Header values may be Latin-1 by the HTTP grammar; names and start line must be ASCII.
        text = data[:end].decode("latin-1")
    lines = text.split("\r\n")
    if not _FIELD_LINES(text, len(lines[0])):
        for line in lines[1:]:
            if line[:1] in (" ", "\t"):
                raise HandshakeError("obsolete header line folding")
        raise HandshakeError("malformed header line")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.lower(), value.strip(" \t")))
    return lines[0], headers, end + 4


def _join_headers(raw: list[tuple[str, str]]) -> dict[str, str]:
    joined: dict[str, str] = {}
    for name, value in raw:
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return joined


def parse_request(data: bytes, max_size: int = MAX_HEADER_SIZE) -> tuple[Request, int] | None:
    """Parse a request head at the start of ``data``.

    Returns ``(request, head_length)``, or ``None`` if the head is not complete yet. Raises
    :class:`HandshakeError` (400, or 431 past ``max_size`` bytes) on a malformed head.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0 or end + 4 > max_size:
        return _parse_request_slowly(data, max_size)
    try:
        text = data[:end].decode("ascii")
    except UnicodeDecodeError:
        return _parse_request_slowly(data, max_size)
    # One regular expression checks the request line and every field line; one findall splits
    # the fields. Anything it does not match takes the step-by-step path, which says what is wrong.
    match = _REQUEST_HEAD(text)
    if match is None:
        return _parse_request_slowly(data, max_size)
    method, path, version, fields = match.groups()
    raw = [(name.lower(), value.rstrip(" \t")) for name, value in _FIELDS(fields)]
    headers = dict(raw)
    if len(headers) != len(raw):  # a repeated name: joined, and Host checked for repeats
        return _parse_request_slowly(data, max_size)
    host = headers.get("host")
    if host is not None and not _HOST(host):
        raise HandshakeError("invalid Host header")
    return Request(method, path, version, headers, raw), end + 4


def _parse_request_slowly(data: bytes, max_size: int) -> tuple[Request, int] | None:
    """:func:`parse_request` step by step, for an incomplete, oversized, repeated-field or
    malformed head: ``None`` or the precise :class:`HandshakeError`."""
    head = _parse_head(data, max_size)
    if head is None:
        return None
    start, raw, length = head
    parts = start.split(" ")
    if len(parts) != 3 or not _METHOD(parts[0]) or not _VERSION(parts[2]):
        raise HandshakeError("malformed request line")
    method, path, version = parts
    if not path.startswith("/"):
        raise HandshakeError("request target must be a path")
    if not _TARGET(path):
        raise HandshakeError("malformed request target")
    headers = _join_headers(raw)
    host = headers.get("host")
    if host is not None:  # RFC 9112 §3.2: one Host, with a valid value
        if sum(name == "host" for name, _ in raw) > 1:
            raise HandshakeError("more than one Host header")
        if not _HOST(host):
            raise HandshakeError("invalid Host header")
    return Request(method, path, version, headers, raw), length


def validate_key(key: str) -> None:
    """Check a ``Sec-WebSocket-Key``: base64 of exactly 16 bytes."""
    try:
        decoded = binascii.a2b_base64(key.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise HandshakeError("Sec-WebSocket-Key is not base64") from None
    if len(decoded) != 16:
        raise HandshakeError("Sec-WebSocket-Key is not 16 bytes")


def _has_token(value: str, token: str) -> bool:
    """Whether the comma-separated header ``value`` holds ``token`` (case-insensitively)."""
    return value.lower() == token or token in [v.lower() for v in split_header_list(value)]


def validate_request(request: Request) -> None:
    """Check that ``request`` is a valid WebSocket upgrade; raise :class:`HandshakeError`."""
    if request.method != "GET":
        raise HandshakeError(f"method {request.method} is not GET")
    if request.version != "HTTP/1.1":
        raise HandshakeError(f"{request.version} is not HTTP/1.1")
    headers = request.headers
    if not _has_token(headers.get("upgrade", ""), "websocket"):
        raise HandshakeError("missing Upgrade: websocket")
    if not _has_token(headers.get("connection", ""), "upgrade"):
        raise HandshakeError("missing Connection: Upgrade")
    if "host" not in headers:
        raise HandshakeError("missing Host header")
    key = headers.get("sec-websocket-key")
    if key is None:
        raise HandshakeError("missing Sec-WebSocket-Key")
    validate_key(key)
    version = headers.get("sec-websocket-version")
    if version is None:
        raise HandshakeError(
            "missing Sec-WebSocket-Version", 426, [("Sec-WebSocket-Version", SUPPORTED_VERSION)]
        )
    if version != SUPPORTED_VERSION and version.strip() != SUPPORTED_VERSION:
        raise HandshakeError(
            f"unsupported Sec-WebSocket-Version {version}",
            426,
            [("Sec-WebSocket-Version", SUPPORTED_VERSION)],
        )


def accept_value(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key``."""
    return _accept_digest(key).decode()


def _accept_digest(key: str) -> bytes:
    return binascii.b2a_base64(_sha1((key + GUID).encode("ascii")).digest(), newline=False)


_sha1 = hashlib.sha1


def select_subprotocol(offered: Sequence[str], supported: Sequence[str] | None) -> str | None:
    """The first of the server's ``supported`` subprotocols that the client offered."""
    if not supported or not offered:
        return None
    for name in supported:
        if name in offered:
            return name
    return None


def accept_headers(
    key: str,
    subprotocol: str | None = None,
    extensions: Sequence[str] = (),
    extra_headers: Iterable[tuple[str, str]] = (),
) -> list[tuple[str, str]]:
    """The headers of the ``101 Switching Protocols`` response for a validated request."""
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_value(key)),
    ]
    if subprotocol:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    if extensions:
        headers.append(("Sec-WebSocket-Extensions", ", ".join(extensions)))
    headers.extend(extra_headers)
    return headers


def accept_response(
    key: str,
    subprotocol: str | None = None,
    extensions: Sequence[str] = (),
    extra_headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """The ``101 Switching Protocols`` response for a validated request."""
    return _encode_101(accept_headers(key, subprotocol, extensions, extra_headers))


def _encode_101(headers: list[tuple[str, str]]) -> bytes:
    return encode_head([SWITCHING_PROTOCOLS, *(f"{name}: {value}" for name, value in headers)])


SWITCHING_PROTOCOLS = "HTTP/1.1 101 Switching Protocols"
_101_HEADERS = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
_101_HEAD = _encode_101(_101_HEADERS)[:-2] + b"Sec-WebSocket-Accept: "


class Accepted(NamedTuple):
    """What :func:`accept` agreed to."""

    response: bytes  # the 101 response
    subprotocol: str | None
    deflate: PerMessageDeflate | None  # the permessage-deflate agreement, if any
    extensions: list[str]  # the accepted extensions, as the response states them
    headers: list[tuple[str, str]] = []  # the 101's headers (what ``response`` encodes)


class HandshakePolicy(Protocol):
    """What :func:`accept` asks of the server's handler before answering an upgrade.

    :class:`wsloop.websocket.WebSocket` (the class, not an instance) is one: see its
    ``origins``, ``process_request`` and ``select_subprotocol``.
    """

    @property
    def origins(self) -> Collection[str | None] | None:
        """Allowed ``Origin`` values (``None`` in it: requests without one); None: any."""

    def process_request(self, request: Request) -> None:
        """Inspect the request; raise :class:`~wsloop.exc.HandshakeRejected` to refuse it."""

    def select_subprotocol(
        self, request: Request, offered: list[str], supported: Sequence[str] | None
    ) -> str | None:
        """The subprotocol to speak, one of ``offered``, or None."""


def origin_allowed(origin: str | None, allowed: Collection[str | None]) -> bool:
    """Whether an ``Origin`` header value (None: absent) is among ``allowed`` (ASCII case-insensitive)."""
    if origin is None:
        return None in allowed
    if origin in allowed:
        return True
    folded = origin.lower()
    return any(item is not None and item.lower() == folded for item in allowed)


def _policy_name(policy: HandshakePolicy) -> str:
    return getattr(policy, "__name__", type(policy).__name__)


def _apply_policy(policy: HandshakePolicy, request: Request, protocols: Sequence[str] | None) -> str | None:
    """Run the policy's checks (raising :class:`HandshakeError`); return the chosen subprotocol."""
    try:
        origins = policy.origins
        if origins is not None and not origin_allowed(request.headers.get("origin"), origins):
            raise HandshakeError("origin not allowed", 403)
        policy.process_request(request)
        if "sec-websocket-protocol" not in request.headers:
            return None
        offered = request.protocols
        subprotocol = policy.select_subprotocol(request, offered, protocols)
    except HandshakeError:
        raise
    except Exception:
        logger.exception("error in the handshake hooks of %s", _policy_name(policy))
        raise HandshakeError("internal server error", 500) from None
    if subprotocol is not None and subprotocol not in offered:
        logger.error(
            "%s.select_subprotocol chose %r, which the client did not offer",
            _policy_name(policy),
            subprotocol,
        )
        raise HandshakeError("internal server error", 500)
    return subprotocol


def accept(
    request: Request,
    protocols: Sequence[str] | None = None,
    compression: DeflateOptions | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
    policy: HandshakePolicy | None = None,
) -> Accepted:
    """Validate an upgrade request and answer it (subprotocol, and permessage-deflate under the
    ``compression`` policy when the client offers it).

    With a ``policy`` (the handler class), after validation: the ``Origin`` header is checked
    against ``policy.origins`` (403), ``policy.process_request`` may refuse the request, and
    ``policy.select_subprotocol`` picks the subprotocol when the client offers any (``protocols``
    are the server's own, passed to it). A hook that raises anything but a
    :class:`HandshakeError`, or picks a subprotocol that was not offered, is logged and answered
    with 500.

    Raises :class:`HandshakeError` with the status to answer when the request is not valid or is
    refused.
    """
    validate_request(request)
    headers = request.headers
    if policy is not None:
        subprotocol = _apply_policy(policy, request, protocols)
    else:
        subprotocol = (
            select_subprotocol(request.protocols, protocols)
            if protocols and "sec-websocket-protocol" in headers
            else None
        )
    negotiated = None
    if "sec-websocket-extensions" in headers:
        offers = request.extensions
        negotiated = negotiate(offers, compression) if offers else None
    extensions = [negotiated[0]] if negotiated else []
    if subprotocol or extensions or extra_headers:
        answer = accept_headers(request.key, subprotocol, extensions, extra_headers)
        return Accepted(
            _encode_101(answer), subprotocol, negotiated[1] if negotiated else None, extensions, answer
        )
    # The common answer: the template with the one value that varies.
    digest = _accept_digest(request.key)
    response = b"".join((_101_HEAD, digest, b"\r\n\r\n"))
    answer = [*_101_HEADERS, ("Sec-WebSocket-Accept", digest.decode())]
    return Accepted(response, None, None, extensions, answer)


def http_response(
    status: int,
    body: bytes = b"",
    content_type: str = "text/plain; charset=utf-8",
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    lines = [
        f"HTTP/1.1 {status} {status_phrase(status)}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return encode_head(lines) + body


def error_response(error: HandshakeError) -> bytes:
    """The HTTP response for a failed handshake: its status and a one-line reason."""
    return http_response(error.status, (error.reason + "\n").encode("utf-8"), headers=error.headers)


# ---------------------------------------------------------------------- environ

_intern = sys.intern


def environ_of(request: Request, peer: Any, tls: bool) -> dict[str, Any]:
    """A WSGI-style environ for a handshake request (``peer``: the client's address or None;
    ``tls``: made over TLS). Every string but the key is interned: the names and most values are
    the same on every connection, and an environ is kept for as long as its connection is open."""
    path, _, query = request.path.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": _intern(request.method),
        "PATH_INFO": _intern(path),
        "QUERY_STRING": _intern(query),
        "SERVER_PROTOCOL": _intern(request.version),
    }
    if peer:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = _intern(str(peer[0])), str(peer[1])
    if tls:
        environ["wsgi.url_scheme"] = "https"
    for name, value in request.headers.items():
        environ[_environ_key(name)] = value if name == "sec-websocket-key" else _intern(value)
    return environ


class LazyEnviron:
    """What :func:`environ_of` needs, kept instead of the environ until a handler reads
    :attr:`wsloop.websocket.WebSocket.environ`, which builds it then: the request head as
    received, the client's address and whether TLS is in use.

    The heads of one client program differ only in their ``Sec-WebSocket-Key``: the head is kept
    as the key and the rest (``template``), and equal templates are one object when ``templates``
    (a dict the server keeps) is given; it takes at most ``_TEMPLATES`` of at most
    ``_TEMPLATE_SIZE`` bytes each.
    """

    __slots__ = ("template", "pos", "key", "host", "port", "tls")

    def __init__(
        self, head: bytes, key: str, peer: Any, tls: bool, templates: dict[bytes, bytes] | None = None
    ) -> None:
        pos = head.find(key.encode("latin-1")) if len(key) == 24 else -1
        if pos > 0 and templates is not None:
            template = head[:pos] + head[pos + 24 :]
            shared = templates.get(template)
            if shared is not None:
                template = shared
            elif len(templates) < _TEMPLATES and len(template) <= _TEMPLATE_SIZE:
                templates[template] = template
            self.template = template
            self.key: bytes | None = head[pos : pos + 24]
        else:
            self.template, self.key = head, None
        self.pos = pos
        # The address as two fields, no tuple; one string for every client of a host.
        self.host = _intern(str(peer[0])) if peer else None
        self.port = peer[1] if peer else None
        self.tls = tls

    @property
    def head(self) -> bytes:
        """The request head as received."""
        key, template = self.key, self.template
        if key is None:
            return template
        return b"".join((template[: self.pos], key, template[self.pos :]))

    def build(self) -> dict[str, Any]:
        """The environ (the head was parsed once already: it parses again)."""
        head = self.head
        parsed = parse_request(head, len(head))
        if parsed is None:
            raise ValueError("not a complete request head")
        peer = (self.host, self.port) if self.host is not None else None
        return environ_of(parsed[0], peer, self.tls)


_TEMPLATES = 64
_TEMPLATE_SIZE = 2048


def _environ_key(name: str) -> str:
    key = _ENVIRON_KEYS.get(name)
    return key if key is not None else _intern("HTTP_" + name.upper().replace("-", "_"))


_ENVIRON_KEYS = {
    name: _intern("HTTP_" + name.upper().replace("-", "_"))
    for name in (
        "host",
        "upgrade",
        "connection",
        "origin",
        "user-agent",
        "pragma",
        "cache-control",
        "accept-encoding",
        "accept-language",
        "cookie",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    )
}


# ---------------------------------------------------------------------- client side


def new_key() -> str:
    """A fresh random ``Sec-WebSocket-Key``."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def client_headers(
    host: str,
    key: str,
    protocols: Sequence[str] | None = None,
    extensions: Sequence[str] | None = None,
    origin: str | None = None,
) -> list[tuple[str, str]]:
    """The header fields of a client's upgrade request (``host`` as it goes in the Host header;
    ``origin``: an Origin header, as browsers send)."""
    headers = [
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", SUPPORTED_VERSION),
    ]
    if origin is not None:
        headers.append(("Origin", origin))
    if protocols:
        headers.append(("Sec-WebSocket-Protocol", ", ".join(protocols)))
    if extensions:
        headers.append(("Sec-WebSocket-Extensions", ", ".join(extensions)))
    return headers


def request_head(path: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """A ``GET path`` request head with these header fields."""
    return encode_head([f"GET {path} HTTP/1.1", *(f"{name}: {value}" for name, value in headers)])


def client_request(
    host: str,
    path: str,
    key: str,
    protocols: Sequence[str] | None = None,
    extensions: Sequence[str] | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """The upgrade request a client sends (``host`` as it goes in the Host header), with
    ``headers`` after the upgrade's own."""
    return request_head(path, [*client_headers(host, key, protocols, extensions), *headers])


def parse_response(data: bytes, max_size: int = MAX_HEADER_SIZE) -> tuple[Response, int] | None:
    """Parse a response head at the start of ``data``; ``None`` while incomplete."""
    head = _parse_head(data, max_size)
    if head is None:
        return None
    start, raw, length = head
    version, _, rest = start.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or not code.isdigit():
        raise HandshakeError("malformed status line")
    return Response(int(code), reason, _join_headers(raw)), length


def validate_response(
    response: Response,
    key: str,
    protocols: Sequence[str] | None = None,
    extensions: Sequence[str] | None = None,
) -> tuple[str | None, list[str]]:
    """Check the server's answer to our upgrade; return (subprotocol, extensions) it chose."""
    if 300 <= response.status < 400:
        location = response.headers.get("location", "")
        raise HandshakeError(f"redirect ({response.status} to {location!r}) refused", response.status)
    if response.status != 101:
        raise HandshakeError(f"server answered {response.status} {response.reason}", response.status)
    headers = response.headers
    if headers.get("upgrade", "").lower() != "websocket":
        raise HandshakeError("response lacks Upgrade: websocket")
    if "upgrade" not in [v.lower() for v in split_header_list(headers.get("connection", ""))]:
        raise HandshakeError("response lacks Connection: Upgrade")
    if headers.get("sec-websocket-accept") != accept_value(key):
        raise HandshakeError("wrong Sec-WebSocket-Accept")
    subprotocol = headers.get("sec-websocket-protocol") or None
    if subprotocol is not None and subprotocol not in (protocols or ()):
        raise HandshakeError(f"server chose subprotocol {subprotocol!r}, which was not offered")
    chosen = split_header_list(headers.get("sec-websocket-extensions", ""))
    offered = {offer.split(";")[0].strip() for offer in extensions or ()}
    for ext in chosen:
        if ext.split(";")[0].strip() not in offered:
            raise HandshakeError(f"server chose extension {ext!r}, which was not offered")
    return subprotocol, chosen
