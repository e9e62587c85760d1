"""permessage-deflate (RFC 7692), free of I/O: negotiation and per-connection compression.

Server side: :func:`negotiate` (and :func:`choose`, the policy in force); client side:
:func:`client_offer` and :func:`client_accept`; :class:`PerMessageDeflate` compresses and
inflates one connection's messages, inflation bounded by the message size limit.
"""

from __future__ import annotations

import sys
import zlib
from dataclasses import dataclass

from .exc import FrameTooLargeException, HandshakeError, ProtocolException
from .headers import split_header_list

__all__ = [
    "DeflateOptions",
    "DEFAULT",
    "FRUGAL",
    "PerMessageDeflate",
    "parse_extensions",
    "negotiate",
    "client_offer",
    "client_accept",
    "choose",
]

NAME = "permessage-deflate"
_TAIL = b"\x00\x00\xff\xff"
# After a deflate stream ended inside a chunk, the rest is inflated in pieces of at least this
# many bytes, at most _STEP_MAX (see PerMessageDeflate._next_streams).
_STEP = 16
_STEP_MAX = 64 * 1024
#: Messages sent uncompressed after one that did not compress (see PerMessageDeflate.wants).
SKIP_AFTER_INCOMPRESSIBLE = 8
_PARAMS = frozenset(
    (
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    )
)


@dataclass(frozen=True)
class DeflateOptions:
    """A policy for permessage-deflate (for a server, or for a client's offer).

    :param server_max_window_bits: the largest window the server compresses with (9-15); a
        smaller one the client asks for is honoured.
    :param client_max_window_bits: the window the client is asked to stay within, when its offer
        lets the server choose (``client_max_window_bits`` in the offer).
    :param server_no_context_takeover: the server resets its compressor after every message.
    :param client_no_context_takeover: ask the client to reset its compressor after every message.
    :param compress_level: zlib level (1 fastest .. 9 smallest). Level 1 compresses JSON-like
        text about twice as fast as zlib's default 6, for about 12% more bytes.
    :param mem_level: zlib memLevel (1 smallest .. 9 fastest).
    :param skip_incompressible: after a message that did not compress, send the next few
        uncompressed (RFC 7692 allows any message to go uncompressed). Off by default: some
        clients mishandle uncompressed messages on a compressed connection (the Autobahn
        TestSuite's client fails its cases).
    """

    server_max_window_bits: int = 12
    client_max_window_bits: int = 12
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    compress_level: int = 1
    mem_level: int = 5
    skip_incompressible: bool = False

    def __post_init__(self) -> None:
        for name in ("server_max_window_bits", "client_max_window_bits"):
            if not 9 <= getattr(self, name) <= 15:
                raise ValueError(f"{name} must be 9..15 (zlib cannot compress with an 8-bit window)")
        if not 1 <= self.mem_level <= 9 or not 0 <= self.compress_level <= 9:
            raise ValueError("mem_level must be 1..9 and compress_level 0..9")


DEFAULT = DeflateOptions()
FRUGAL = DeflateOptions(
    server_max_window_bits=9,
    client_max_window_bits=9,
    server_no_context_takeover=True,
    client_no_context_takeover=True,
    mem_level=1,
)


class PerMessageDeflate:
    """One connection's negotiated permessage-deflate: compress what we send, inflate what we get.

    ``local_*`` describe our compressor (the server's parameters on a server), ``remote_*`` the
    peer's (our decompressor's window must be at least the peer's).
    """

    __slots__ = (
        "local_no_context_takeover",
        "remote_no_context_takeover",
        "local_max_window_bits",
        "remote_max_window_bits",
        "compress_level",
        "mem_level",
        "_compressor",
        "_decompressor",
        "_skip",
        "_raw",
        "_packed",
        "_fed",
        "skip_incompressible",
    )

    def __init__(
        self,
        local_no_context_takeover: bool = False,
        remote_no_context_takeover: bool = False,
        local_max_window_bits: int = 15,
        remote_max_window_bits: int = 15,
        compress_level: int = 6,
        mem_level: int = 8,
        skip_incompressible: bool = False,
    ) -> None:
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_no_context_takeover = remote_no_context_takeover
        self.local_max_window_bits = max(9, local_max_window_bits)  # zlib cannot compress with 8
        # As agreed (8 is allowed): inflating with a 9-bit window reads 8-bit-window data too.
        self.remote_max_window_bits = remote_max_window_bits
        self.compress_level = compress_level
        self.mem_level = mem_level
        self.skip_incompressible = skip_incompressible
        self._compressor: zlib._Compress | None = None
        self._decompressor: zlib._Decompress | None = None
        self._skip = 0  # messages still to send uncompressed after an incompressible one
        self._raw = 0  # bytes of the message being compressed, in and out
        self._packed = 0
        self._fed = 0  # compressed bytes of the message being inflated so far

    def wants(self) -> bool:
        """Whether to compress the next message (RFC 7692 lets a sender leave any uncompressed).

        With ``skip_incompressible``: after a message of 1 KiB or more that compressed to 95% or
        more of its size (media, encrypted or already compressed data), the next
        :data:`SKIP_AFTER_INCOMPRESSIBLE` messages are sent as they are, then compression is
        tried again.
        """
        if self._skip:
            self._skip -= 1
            return False
        return True

    def compress(self, data: bytes | bytearray | memoryview, fin: bool) -> bytes:
        """Compress one frame's worth of a message; ``fin`` ends the message."""
        compressor = self._compressor
        if compressor is None:
            compressor = self._compressor = zlib.compressobj(
                self.compress_level, zlib.DEFLATED, -self.local_max_window_bits, self.mem_level
            )
        out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        self._raw += len(data)
        if fin:
            if out.endswith(_TAIL):
                out = out[:-4]
            if self.local_no_context_takeover:
                self._compressor = None
            raw = self._raw
            if self.skip_incompressible and raw >= 1024 and (self._packed + len(out)) * 20 >= raw * 19:
                self._skip = SKIP_AFTER_INCOMPRESSIBLE
            self._raw = self._packed = 0
        else:
            self._packed += len(out)
        return out

    def decompress(self, data: bytes, allowance: int, fin: bool) -> bytes:
        """Inflate a chunk of a compressed message, producing at most ``allowance`` bytes
        (more fails with 1009); ``fin`` when the chunk ends the message."""
        self._fed += len(data)
        if fin:
            if not self._fed:
                return b""  # a zero-length payload: an empty message, nothing to inflate
            self._fed = 0
            data = data + _TAIL
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = self._decompressor = zlib.decompressobj(-max(9, self.remote_max_window_bits))
        try:
            out = decompressor.decompress(data, min(allowance + 1, sys.maxsize))
        except zlib.error as exc:
            raise ProtocolException(f"invalid compressed data: {exc}", 1007) from None
        if len(out) > allowance:
            raise FrameTooLargeException("message over the size limit once decompressed")
        if decompressor.eof:
            out = self._next_streams(data, decompressor, out, allowance)
        if fin and self.remote_no_context_takeover:
            self._decompressor = None
        return out

    def _next_streams(
        self, data: bytes, decompressor: zlib._Decompress, first: bytes, allowance: int
    ) -> bytes:
        """Inflate what follows a block with BFINAL set, which ended the deflate stream (RFC
        7692 §7.2.3.4): each further stream with a decompressor of its own.

        (A stream's window does not carry over to the next: a sender that ends messages with
        BFINAL and refers back across them is not supported.) The cost stays linear in input
        and output however many streams a frame holds: the output grows in one bytearray, and
        zlib is given the input in pieces, since at a stream's end it copies all the input it
        was given past it (``unused_data``): a piece starts at twice the length of the stream
        before (so that copy is paid for by that stream's bytes) and doubles while no stream ends.
        """
        wbits = -max(9, self.remote_max_window_bits)
        out = bytearray(first)
        view = memoryview(data)
        end = len(data)
        pos = start = end - len(decompressor.unused_data)
        step = max(_STEP, 2 * pos)
        while True:
            if decompressor.eof:
                if pos >= end:
                    self._decompressor = None  # the next chunk (or message) starts a stream
                    break
                decompressor = zlib.decompressobj(wbits)
            elif pos >= end:
                self._decompressor = decompressor
                break
            piece = view[pos : pos + step]
            try:
                out += decompressor.decompress(piece, min(allowance - len(out) + 1, sys.maxsize))
            except zlib.error as exc:
                raise ProtocolException(f"invalid compressed data: {exc}", 1007) from None
            if len(out) > allowance:
                raise FrameTooLargeException("message over the size limit once decompressed")
            if decompressor.eof:
                pos += len(piece) - len(decompressor.unused_data)
                step = max(_STEP, 2 * (pos - start))
                start = pos
            else:
                pos += len(piece)
                step = min(step * 2, _STEP_MAX)
        return bytes(out)

    def response_params(self, server: bool = True) -> str:
        """This agreement as a ``Sec-WebSocket-Extensions`` value (the server's response)."""
        local, remote = ("server", "client") if server else ("client", "server")
        params = [NAME]
        if self.local_no_context_takeover:
            params.append(f"{local}_no_context_takeover")
        if self.remote_no_context_takeover:
            params.append(f"{remote}_no_context_takeover")
        if self.local_max_window_bits < 15:
            params.append(f"{local}_max_window_bits={self.local_max_window_bits}")
        if self.remote_max_window_bits < 15:
            params.append(f"{remote}_max_window_bits={self.remote_max_window_bits}")
        return "; ".join(params)

    def __repr__(self) -> str:
        return f"<PerMessageDeflate {self.response_params()}>"


def parse_extensions(values: list[str]) -> list[tuple[str, dict[str, str | None] | None]]:
    """Parse ``Sec-WebSocket-Extensions`` items into ``(name, {param: value or None})``; an item
    that repeats a parameter gets ``None`` instead of its parameters (it is to be declined)."""
    parsed: list[tuple[str, dict[str, str | None] | None]] = []
    for item in values:
        name, *params = (part.strip() for part in item.split(";"))
        options: dict[str, str | None] | None = {}
        for param in params:
            if not param:
                continue
            key, eq, value = param.partition("=")
            key = key.strip()
            assert options is not None
            if key in options:
                options = None
                break
            options[key] = value.strip().strip('"') if eq else None
        parsed.append((name.lower(), options))
    return parsed


def _bits(value: str | None, name: str) -> int:
    if value is None or not value.isdigit() or not 8 <= int(value) <= 15 or value != str(int(value)):
        raise ValueError(f"invalid {name}: {value!r}")
    return int(value)


def negotiate(offers: list[str], options: DeflateOptions | None) -> tuple[str, PerMessageDeflate] | None:
    """Accept the first acceptable permessage-deflate offer: ``(response value, agreement)``.

    Offers with unknown or malformed parameters are declined (skipped), as is one asking the
    server for an 8-bit window, which zlib cannot compress with. ``None``: nothing accepted.
    """
    if options is None:
        return None
    for name, params in parse_extensions(offers):
        if name != NAME or params is None or not set(params) <= _PARAMS:
            continue
        try:
            for flag in ("server_no_context_takeover", "client_no_context_takeover"):
                if params.get(flag, None) is not None:
                    raise ValueError(f"{flag} takes no value")
            server_bits = options.server_max_window_bits
            if "server_max_window_bits" in params:
                requested = _bits(params["server_max_window_bits"], "server_max_window_bits")
                if requested < 9:
                    continue
                server_bits = min(server_bits, requested)
            client_bits = 15
            if "client_max_window_bits" in params:
                offered = params["client_max_window_bits"]
                limit = 15 if offered is None else _bits(offered, "client_max_window_bits")
                client_bits = min(limit, options.client_max_window_bits)
        except ValueError:
            continue
        agreement = PerMessageDeflate(
            local_no_context_takeover=options.server_no_context_takeover
            or "server_no_context_takeover" in params,
            remote_no_context_takeover=options.client_no_context_takeover,
            local_max_window_bits=server_bits,
            remote_max_window_bits=client_bits,
            compress_level=options.compress_level,
            mem_level=options.mem_level,
            skip_incompressible=options.skip_incompressible,
        )
        return agreement.response_params(server=True), agreement
    return None


def client_offer(options: DeflateOptions = DEFAULT) -> str:
    """The offer a client sends: it lets the server choose our window within its policy."""
    params = [NAME, "client_max_window_bits"]
    if options.server_max_window_bits < 15:
        params.append(f"server_max_window_bits={options.server_max_window_bits}")
    if options.client_no_context_takeover:
        params.append("client_no_context_takeover")
    if options.server_no_context_takeover:
        params.append("server_no_context_takeover")
    return "; ".join(params)


def client_accept(response: str, options: DeflateOptions = DEFAULT) -> PerMessageDeflate:
    """Check the server's answer to :func:`client_offer` and return the client's agreement."""
    parsed = parse_extensions(split_header_list(response))
    if len(parsed) != 1 or parsed[0][0] != NAME:
        raise HandshakeError(f"unexpected extension response {response!r}")
    params = parsed[0][1]
    if params is None:
        raise HandshakeError(f"repeated permessage-deflate parameter in {response!r}")
    if not set(params) <= _PARAMS:
        raise HandshakeError(f"unknown permessage-deflate parameter in {response!r}")
    try:
        server_bits = (
            _bits(params["server_max_window_bits"], "server_max_window_bits")
            if ("server_max_window_bits" in params)
            else 15
        )
        client_bits = (
            _bits(params["client_max_window_bits"], "client_max_window_bits")
            if ("client_max_window_bits" in params)
            else 15
        )
    except ValueError as exc:
        raise HandshakeError(str(exc)) from None
    if client_bits < 9:
        raise HandshakeError("the server asks for an 8-bit window, which zlib cannot compress with")
    if server_bits > options.server_max_window_bits and options.server_max_window_bits < 15:
        raise HandshakeError("server_max_window_bits above what was offered")
    if options.server_no_context_takeover and "server_no_context_takeover" not in params:
        raise HandshakeError("server_no_context_takeover was required")
    agreement = PerMessageDeflate(
        local_no_context_takeover=options.client_no_context_takeover
        or "client_no_context_takeover" in params,
        remote_no_context_takeover="server_no_context_takeover" in params,
        local_max_window_bits=client_bits,
        remote_max_window_bits=server_bits,
        compress_level=options.compress_level,
        mem_level=options.mem_level,
    )
    return agreement


def choose(
    handler_policy: DeflateOptions | None, server_option: bool | DeflateOptions = True
) -> DeflateOptions | None:
    """The policy in force: a server's ``compression`` option (False: off, True: the handler's
    policy, or a policy of its own) and the handler class's ``compression`` (None: the handler
    opts out, whatever the server says)."""
    if handler_policy is None or server_option is False:
        return None
    if server_option is True:
        return handler_policy
    return server_option
