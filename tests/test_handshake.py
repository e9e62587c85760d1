"""Unit tests for wsloop.handshake (RFC 6455 §4 opening handshake, sans I/O)."""

from __future__ import annotations

import base64
import logging
import socket
from collections.abc import Sequence

import pytest

from wsloop.exc import HandshakeError, HandshakeRejected
from wsloop.handshake import (
    MAX_HEADER_SIZE,
    Request,
    Response,
    accept,
    accept_response,
    accept_value,
    client_request,
    error_response,
    new_key,
    parse_request,
    parse_response,
    select_subprotocol,
    validate_key,
    validate_request,
    validate_response,
)
from wsloop.upgrade import UNSET, Accept, Page, Reject, ServeOptions, ServerPolicy
from wsloop.websocket import WebSocket

# RFC 6455 §1.3 / §4.1 example.
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

RFC_HEADERS = [
    ("Host", "server.example.com"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", RFC_KEY),
    ("Origin", "http://example.com"),
    ("Sec-WebSocket-Protocol", "chat, superchat"),
    ("Sec-WebSocket-Version", "13"),
]


def head(start_line: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [start_line, *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def request_bytes(
    start_line: str = "GET /chat HTTP/1.1",
    *,
    drop: tuple[str, ...] = (),
    replace: dict[str, str] | None = None,
    add: list[tuple[str, str]] | None = None,
) -> bytes:
    replace = replace or {}
    headers = [(n, replace.get(n, v)) for n, v in RFC_HEADERS if n not in drop]
    return head(start_line, headers + (add or []))


def parsed(data: bytes) -> Request:
    result = parse_request(data)
    assert result is not None
    return result[0]


def response_headers(data: bytes) -> tuple[str, dict[str, str]]:
    """Status line and headers (lower-cased names) of an HTTP response, parsed by hand."""
    text = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    status, *lines = text.split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def http_101(key: str = RFC_KEY, **changes: str | None) -> Response:
    """A valid 101 response for ``key``; ``changes`` set (or, with None, remove) headers."""
    headers: dict[str, str | None] = {
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-accept": accept_value(key),
    }
    headers.update({name.replace("_", "-"): value for name, value in changes.items()})
    return Response(101, "Switching Protocols", {k: v for k, v in headers.items() if v is not None})


# ---------------------------------------------------------------------- accept value


def test_accept_value_rfc_example() -> None:
    assert accept_value(RFC_KEY) == RFC_ACCEPT


# ---------------------------------------------------------------------- parse_request


def test_parse_rfc_request() -> None:
    data = request_bytes()
    result = parse_request(data)
    assert result is not None
    request, length = result
    assert length == len(data)
    assert (request.method, request.path, request.version) == ("GET", "/chat", "HTTP/1.1")
    assert request.headers["host"] == "server.example.com"
    assert request.headers["origin"] == "http://example.com"
    assert request.key == RFC_KEY
    assert request.protocols == ["chat", "superchat"]
    assert request.is_upgrade


def test_parse_request_lowercases_header_names_and_keeps_raw_order() -> None:
    request = parsed(head("GET / HTTP/1.1", [("X-CamelCase", "Value"), ("HOST", "h")]))
    assert request.headers == {"x-camelcase": "Value", "host": "h"}
    assert request.raw_headers == [("x-camelcase", "Value"), ("host", "h")]


def test_parse_request_strips_header_value_whitespace() -> None:
    request = parsed(b"GET / HTTP/1.1\r\nHost:   spaced.example   \r\nX-Empty:\r\n\r\n")
    assert request.headers["host"] == "spaced.example"
    assert request.headers["x-empty"] == ""


def test_parse_request_keeps_colons_in_values() -> None:
    request = parsed(head("GET / HTTP/1.1", [("Host", "example.com:8080")]))
    assert request.headers["host"] == "example.com:8080"


def test_parse_request_joins_repeated_headers() -> None:
    request = parsed(
        head(
            "GET / HTTP/1.1",
            [("Sec-WebSocket-Protocol", "a, b"), ("Host", "h"), ("Sec-WebSocket-Protocol", "c")],
        )
    )
    assert request.protocols == ["a", "b", "c"]


def test_parse_request_extensions() -> None:
    request = parsed(
        head(
            "GET / HTTP/1.1", [("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits, x")]
        )
    )
    assert request.extensions == ["permessage-deflate; client_max_window_bits", "x"]


def test_parse_request_no_protocols_offered() -> None:
    request = parsed(request_bytes(drop=("Sec-WebSocket-Protocol",)))
    assert request.protocols == []


def test_parse_request_accepts_latin1_header_value() -> None:
    request = parsed(b"GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\xe9\r\n\r\n")
    assert request.headers["x-name"] == "café"


def test_parse_request_plain_http_is_not_upgrade() -> None:
    request = parsed(head("GET /index.html HTTP/1.1", [("Host", "h")]))
    assert not request.is_upgrade


def test_parse_request_keeps_query_string_in_path() -> None:
    assert parsed(request_bytes("GET /chat?room=1&x=%20 HTTP/1.1")).path == "/chat?room=1&x=%20"


def test_parse_request_incomplete_returns_none() -> None:
    data = request_bytes()
    for cut in range(len(data)):
        assert parse_request(data[:cut]) is None, cut


def test_parse_request_returns_length_with_leftover_bytes() -> None:
    data = request_bytes()
    leftover = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
    result = parse_request(data + leftover)
    assert result is not None
    request, length = result
    assert length == len(data)
    assert (data + leftover)[length:] == leftover
    assert request.key == RFC_KEY


def test_parse_request_leftover_that_looks_like_http_is_not_parsed() -> None:
    first = request_bytes()
    second = head("GET /second HTTP/1.1", [("Host", "h")])
    result = parse_request(first + second)
    assert result is not None
    request, length = result
    assert request.path == "/chat"
    assert length == len(first)


def padded_request(size: int) -> bytes:
    """A complete request head of exactly ``size`` bytes."""
    base = request_bytes(add=[("X-Pad", "")])
    return base[:-4] + b"p" * (size - len(base)) + b"\r\n\r\n"


def test_parse_request_head_of_exactly_max_size_is_accepted() -> None:
    data = padded_request(MAX_HEADER_SIZE)
    assert len(data) == 16 * 1024
    result = parse_request(data)
    assert result is not None
    assert result[1] == 16 * 1024


def test_parse_request_complete_head_over_16k_is_431() -> None:
    data = padded_request(16 * 1024 + 1)
    with pytest.raises(HandshakeError) as exc_info:
        parse_request(data)
    assert exc_info.value.status == 431


def test_parse_request_incomplete_head_over_16k_is_431() -> None:
    data = request_bytes()[:-4] + b"\r\nX-Pad: " + b"p" * (16 * 1024)
    assert len(data) > 16 * 1024
    with pytest.raises(HandshakeError) as exc_info:
        parse_request(data)
    assert exc_info.value.status == 431


def test_parse_request_incomplete_head_just_over_16k_is_431() -> None:
    data = (request_bytes()[:-4] + b"\r\nX-Pad: " + b"p" * (16 * 1024))[: 16 * 1024 + 1]
    with pytest.raises(HandshakeError) as exc_info:
        parse_request(data)
    assert exc_info.value.status == 431


def test_parse_request_incomplete_head_of_16k_still_waits() -> None:
    data = (request_bytes()[:-4] + b"\r\nX-Pad: " + b"p" * (16 * 1024))[: 16 * 1024]
    assert parse_request(data) is None


def test_parse_request_custom_max_size() -> None:
    data = request_bytes()
    assert parse_request(data, max_size=len(data)) is not None
    with pytest.raises(HandshakeError) as exc_info:
        parse_request(data, max_size=len(data) - 1)
    assert exc_info.value.status == 431


@pytest.mark.parametrize(
    "start_line",
    [
        "",
        "GET",
        "GET /chat",
        "GET  /chat HTTP/1.1",
        "GET /chat  HTTP/1.1",
        "GET /chat HTTP/1.1 extra",
        "GET /chat FTP/1.1",
        "GET /chat http/1.1",
        "GET chat HTTP/1.1",
        "GET http://server.example.com/chat HTTP/1.1",
        "GET * HTTP/1.1",
    ],
)
def test_parse_request_malformed_request_line_is_400(start_line: str) -> None:
    with pytest.raises(HandshakeError) as exc_info:
        parse_request(request_bytes(start_line))
    assert exc_info.value.status == 400


@pytest.mark.parametrize(
    "line",
    [
        b"NoColonHere",
        b"Host : server.example.com",
        b" Host: server.example.com",
        b"\tcontinued",
        b": no name",
        b"H\xe9st: x",
    ],
    ids=["no-colon", "space-before-colon", "leading-space", "leading-tab", "empty-name", "non-ascii-name"],
)
def test_parse_request_malformed_header_line_is_400(line: bytes) -> None:
    data = b"GET /chat HTTP/1.1\r\nHost: h\r\n" + line + b"\r\nUpgrade: websocket\r\n\r\n"
    with pytest.raises(HandshakeError) as exc_info:
        parse_request(data)
    assert exc_info.value.status == 400


# ---------------------------------------------------------------------- validate_request


def test_validate_rfc_request() -> None:
    validate_request(parsed(request_bytes()))  # does not raise


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Upgrade", "WebSocket"),
        ("Upgrade", "WEBSOCKET"),
        ("Connection", "keep-alive, Upgrade"),
        ("Connection", "upgrade"),
        ("Connection", "Upgrade,keep-alive"),
        ("Sec-WebSocket-Version", " 13 "),
    ],
)
def test_validate_request_tolerant_forms(name: str, value: str) -> None:
    validate_request(parsed(request_bytes(replace={name: value})))


def test_validate_request_lowercase_header_names() -> None:
    data = (
        request_bytes().replace(b"Sec-WebSocket-Key", b"sec-websocket-key").replace(b"Upgrade:", b"upgrade:")
    )
    validate_request(parsed(data))


INVALID_REQUESTS = {
    "method-post": request_bytes("POST /chat HTTP/1.1"),
    "method-lowercase": request_bytes("get /chat HTTP/1.1"),
    "http-1.0": request_bytes("GET /chat HTTP/1.0"),
    "missing-upgrade": request_bytes(drop=("Upgrade",)),
    "upgrade-not-websocket": request_bytes(replace={"Upgrade": "h2c"}),
    "missing-connection": request_bytes(drop=("Connection",)),
    "connection-without-upgrade": request_bytes(replace={"Connection": "keep-alive"}),
    "connection-close": request_bytes(replace={"Connection": "close"}),
    "missing-host": request_bytes(drop=("Host",)),
    "missing-key": request_bytes(drop=("Sec-WebSocket-Key",)),
    "key-not-base64": request_bytes(replace={"Sec-WebSocket-Key": "not base64 at all!!!!!!!"}),
    "key-with-invalid-char": request_bytes(replace={"Sec-WebSocket-Key": RFC_KEY[:12] + "!" + RFC_KEY[12:]}),
    "key-bad-padding": request_bytes(replace={"Sec-WebSocket-Key": RFC_KEY.rstrip("=")}),
    "key-15-bytes": request_bytes(replace={"Sec-WebSocket-Key": base64.b64encode(b"x" * 15).decode()}),
    "key-17-bytes": request_bytes(replace={"Sec-WebSocket-Key": base64.b64encode(b"x" * 17).decode()}),
    "key-empty": request_bytes(replace={"Sec-WebSocket-Key": ""}),
}


@pytest.mark.parametrize("data", list(INVALID_REQUESTS.values()), ids=list(INVALID_REQUESTS))
def test_validate_request_invalid_is_400(data: bytes) -> None:
    with pytest.raises(HandshakeError) as exc_info:
        validate_request(parsed(data))
    assert exc_info.value.status == 400
    assert exc_info.value.reason


@pytest.mark.parametrize(
    "data",
    [
        request_bytes(drop=("Sec-WebSocket-Version",)),
        request_bytes(replace={"Sec-WebSocket-Version": "8"}),
        request_bytes(replace={"Sec-WebSocket-Version": "7"}),
        request_bytes(replace={"Sec-WebSocket-Version": "14"}),
        request_bytes(replace={"Sec-WebSocket-Version": "8, 13"}),
    ],
    ids=["missing", "8", "7", "14", "list"],
)
def test_validate_request_unsupported_version_is_426_with_version_header(data: bytes) -> None:
    with pytest.raises(HandshakeError) as exc_info:
        validate_request(parsed(data))
    assert exc_info.value.status == 426
    assert ("Sec-WebSocket-Version", "13") in exc_info.value.headers


def test_validate_key_accepts_rfc_key() -> None:
    validate_key(RFC_KEY)


def test_validate_key_rejects_non_ascii() -> None:
    with pytest.raises(HandshakeError) as exc_info:
        validate_key("dGhlIHNhbXBsZSBub25jZQ=é")
    assert exc_info.value.status == 400


# ---------------------------------------------------------------------- accept / subprotocols


def test_accept_returns_101_with_rfc_accept_value() -> None:
    response, subprotocol, *_ = accept(parsed(request_bytes()))
    status, headers = response_headers(response)
    assert status == "HTTP/1.1 101 Switching Protocols"
    assert headers["sec-websocket-accept"] == RFC_ACCEPT
    assert headers["upgrade"].lower() == "websocket"
    assert headers["connection"].lower() == "upgrade"
    assert response.endswith(b"\r\n\r\n")
    assert subprotocol is None
    assert "sec-websocket-protocol" not in headers


def test_accept_response_is_parsed_by_parse_response() -> None:
    response, *_ = accept(parsed(request_bytes()))
    result = parse_response(response)
    assert result is not None
    assert result[0].status == 101
    assert result[1] == len(response)


def test_accept_invalid_request_raises() -> None:
    with pytest.raises(HandshakeError) as exc_info:
        accept(parsed(request_bytes(drop=("Host",))))
    assert exc_info.value.status == 400


def test_accept_extra_headers() -> None:
    response, *_ = accept(parsed(request_bytes()), extra_headers=[("Server", "wsloop-test"), ("X-A", "b")])
    _, headers = response_headers(response)
    assert headers["server"] == "wsloop-test"
    assert headers["x-a"] == "b"


@pytest.mark.parametrize(
    ("supported", "chosen"),
    [
        (["superchat", "chat"], "superchat"),  # the server's preference wins
        (["chat", "superchat"], "chat"),
        (["other", "superchat"], "superchat"),
        (["other"], None),  # none matching
        ([], None),
        (None, None),
    ],
)
def test_accept_subprotocol_selection(supported: list[str] | None, chosen: str | None) -> None:
    response, subprotocol, *_ = accept(parsed(request_bytes()), protocols=supported)
    _, headers = response_headers(response)
    assert subprotocol == chosen
    assert headers.get("sec-websocket-protocol") == chosen


def test_accept_no_subprotocol_offered() -> None:
    response, subprotocol, *_ = accept(
        parsed(request_bytes(drop=("Sec-WebSocket-Protocol",))), protocols=["chat"]
    )
    assert subprotocol is None
    assert "sec-websocket-protocol" not in response_headers(response)[1]


@pytest.mark.parametrize(
    ("offered", "supported", "chosen"),
    [
        (["a", "b"], ["b", "a"], "b"),
        (["a", "b"], ["a", "b"], "a"),
        (["a"], ["b"], None),
        ([], ["a"], None),
        (["a"], [], None),
        (["a"], None, None),
        (["Chat"], ["chat"], None),  # subprotocol names are case-sensitive (RFC 6455 §4.1)
    ],
)
def test_select_subprotocol(offered: list[str], supported: list[str] | None, chosen: str | None) -> None:
    assert select_subprotocol(offered, supported) == chosen


def test_accept_response_with_extensions() -> None:
    _, headers = response_headers(accept_response(RFC_KEY, None, ["permessage-deflate", "x-ext"]))
    assert headers["sec-websocket-extensions"] == "permessage-deflate, x-ext"


# ---------------------------------------------------------------------- error_response


def split_response(data: bytes) -> tuple[str, dict[str, str], bytes]:
    head_part, body = data.split(b"\r\n\r\n", 1)
    status, headers = response_headers(head_part + b"\r\n\r\n")
    return status, headers, body


@pytest.mark.parametrize(
    ("status", "status_line"),
    [
        (400, "HTTP/1.1 400 Bad Request"),
        (426, "HTTP/1.1 426 Upgrade Required"),
        (431, "HTTP/1.1 431 Request Header Fields Too Large"),
    ],
)
def test_error_response_status_line_and_reason(status: int, status_line: str) -> None:
    data = error_response(HandshakeError("the reason ☃", status))
    line, headers, body = split_response(data)
    assert line == status_line
    assert "the reason ☃" in body.decode("utf-8")
    assert int(headers["content-length"]) == len(body)
    assert headers["connection"].lower() == "close"


def test_error_response_for_version_error_advertises_13() -> None:
    try:
        validate_request(parsed(request_bytes(replace={"Sec-WebSocket-Version": "8"})))
    except HandshakeError as exc:
        error = exc
    else:  # pragma: no cover
        pytest.fail("version 8 accepted")
    line, headers, _ = split_response(error_response(error))
    assert line.startswith("HTTP/1.1 426 ")
    assert headers["sec-websocket-version"] == "13"


def test_error_response_for_oversized_head() -> None:
    with pytest.raises(HandshakeError) as exc_info:
        parse_request(padded_request(MAX_HEADER_SIZE + 1))
    line, _, body = split_response(error_response(exc_info.value))
    assert line.startswith("HTTP/1.1 431 ")
    assert exc_info.value.reason in body.decode()


# ---------------------------------------------------------------------- client side


def test_new_key_is_valid_and_random() -> None:
    keys = {new_key() for _ in range(8)}
    assert len(keys) == 8
    for key in keys:
        validate_key(key)
        assert len(base64.b64decode(key)) == 16


def test_client_request_is_a_valid_upgrade() -> None:
    key = new_key()
    data = client_request("example.com:8080", "/ws?x=1", key, protocols=["chat", "superchat"])
    result = parse_request(data)
    assert result is not None
    request, length = result
    assert length == len(data)
    validate_request(request)
    assert request.path == "/ws?x=1"
    assert request.headers["host"] == "example.com:8080"
    assert request.key == key
    assert request.protocols == ["chat", "superchat"]


def test_client_request_extensions_and_extra_headers() -> None:
    data = client_request(
        "h", "/", RFC_KEY, extensions=["permessage-deflate"], headers=[("Origin", "http://o.example")]
    )
    request = parsed(data)
    assert request.extensions == ["permessage-deflate"]
    assert request.headers["origin"] == "http://o.example"


def test_client_request_without_protocols_has_no_protocol_header() -> None:
    request = parsed(client_request("h", "/", RFC_KEY))
    assert "sec-websocket-protocol" not in request.headers
    assert "sec-websocket-extensions" not in request.headers


@pytest.mark.parametrize(
    ("client_protocols", "server_protocols", "expected"),
    [
        (None, None, None),
        (["chat"], ["chat"], "chat"),
        (["chat", "superchat"], ["superchat", "chat"], "superchat"),
        (["chat"], ["other"], None),
        (None, ["chat"], None),
    ],
)
def test_client_server_round_trip(
    client_protocols: list[str] | None, server_protocols: list[str] | None, expected: str | None
) -> None:
    key = new_key()
    request_data = client_request("example.com", "/chat", key, protocols=client_protocols)
    request = parsed(request_data)
    response_data, chosen, *_ = accept(request, protocols=server_protocols)
    assert chosen == expected
    leftover = b"\x81\x02hi"
    result = parse_response(response_data + leftover)
    assert result is not None
    response, length = result
    assert (response_data + leftover)[length:] == leftover
    assert response.status == 101
    subprotocol, extensions = validate_response(response, key, protocols=client_protocols)
    assert subprotocol == expected
    assert extensions == []


def test_parse_response_incomplete_returns_none() -> None:
    data = accept_response(RFC_KEY)
    for cut in range(len(data)):
        assert parse_response(data[:cut]) is None, cut


def test_parse_response_fields() -> None:
    result = parse_response(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nX-Multi: a\r\nX-Multi: b\r\n\r\n"
    )
    assert result is not None
    response = result[0]
    assert (response.status, response.reason) == (404, "Not Found")
    assert response.headers["content-length"] == "0"
    assert response.headers["x-multi"] == "a, b"


@pytest.mark.parametrize(
    "status_line",
    ["", "HTTP/1.1", "HTTP/1.1 abc OK", "HTTX/1.1 101 Switching Protocols", "101 Switching Protocols"],
)
def test_parse_response_malformed_status_line(status_line: str) -> None:
    with pytest.raises(HandshakeError):
        parse_response(head(status_line, [("Upgrade", "websocket")]))


def test_parse_response_over_max_size_is_refused() -> None:
    with pytest.raises(HandshakeError):
        parse_response(b"HTTP/1.1 101 Switching Protocols\r\nX-Pad: " + b"p" * (16 * 1024))


def test_validate_response_rfc_example() -> None:
    data = (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Protocol: chat\r\n\r\n"
    )
    result = parse_response(data)
    assert result is not None
    assert validate_response(result[0], RFC_KEY, protocols=["chat", "superchat"]) == ("chat", [])


def test_validate_response_wrong_accept_is_refused() -> None:
    with pytest.raises(HandshakeError, match="(?i)accept"):
        validate_response(http_101(sec_websocket_accept=accept_value(new_key())), RFC_KEY)


def test_validate_response_missing_accept_is_refused() -> None:
    with pytest.raises(HandshakeError, match="(?i)accept"):
        validate_response(http_101(sec_websocket_accept=None), RFC_KEY)


def test_validate_response_accept_for_other_key_is_refused() -> None:
    # The accept value is bound to the key we sent.
    response = http_101(key=RFC_KEY)
    with pytest.raises(HandshakeError):
        validate_response(response, new_key())


@pytest.mark.parametrize(
    ("name", "value"),
    [("upgrade", None), ("upgrade", "h2c"), ("connection", None), ("connection", "keep-alive")],
)
def test_validate_response_missing_upgrade_headers_is_refused(name: str, value: str | None) -> None:
    with pytest.raises(HandshakeError):
        validate_response(http_101(**{name: value}), RFC_KEY)


def test_validate_response_case_insensitive_upgrade_values() -> None:
    assert validate_response(http_101(upgrade="WebSocket", connection="keep-alive, upgrade"), RFC_KEY) == (
        None,
        [],
    )


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_validate_response_redirect_is_refused_with_clear_message(status: int) -> None:
    location = "wss://elsewhere.example/chat"
    response = Response(status, "Moved", {"location": location})
    with pytest.raises(HandshakeError) as exc_info:
        validate_response(response, RFC_KEY)
    message = str(exc_info.value)
    assert "redirect" in message.lower()
    assert str(status) in message
    assert location in message
    assert exc_info.value.status == status


@pytest.mark.parametrize(("status", "reason"), [(200, "OK"), (400, "Bad Request"), (403, "Forbidden")])
def test_validate_response_non_101_is_refused(status: int, reason: str) -> None:
    with pytest.raises(HandshakeError) as exc_info:
        validate_response(Response(status, reason, {}), RFC_KEY)
    assert exc_info.value.status == status
    assert str(status) in str(exc_info.value)


@pytest.mark.parametrize("offered", [None, [], ["chat"]])
def test_validate_response_unexpected_subprotocol_is_refused(offered: list[str] | None) -> None:
    response = http_101(sec_websocket_protocol="superchat")
    with pytest.raises(HandshakeError, match="superchat"):
        validate_response(response, RFC_KEY, protocols=offered)


def test_validate_response_several_subprotocols_are_refused() -> None:
    response = http_101(sec_websocket_protocol="chat, superchat")
    with pytest.raises(HandshakeError):
        validate_response(response, RFC_KEY, protocols=["chat", "superchat"])


def test_validate_response_unoffered_extension_is_refused() -> None:
    response = http_101(sec_websocket_extensions="permessage-deflate")
    with pytest.raises(HandshakeError, match="permessage-deflate"):
        validate_response(response, RFC_KEY)
    with pytest.raises(HandshakeError, match="x-other"):
        validate_response(
            http_101(sec_websocket_extensions="x-other"), RFC_KEY, extensions=["permessage-deflate"]
        )


def test_validate_response_offered_extension_is_returned() -> None:
    response = http_101(sec_websocket_extensions="permessage-deflate; server_no_context_takeover")
    subprotocol, extensions = validate_response(
        response, RFC_KEY, extensions=["permessage-deflate; client_max_window_bits"]
    )
    assert subprotocol is None
    assert extensions == ["permessage-deflate; server_no_context_takeover"]


# ---------------------------------------------------------------------- accept() with a policy
# (the handler class's origins, process_request and select_subprotocol hooks)


class OnlyExample(WebSocket):
    origins = ["http://Example.com", None]


class Guarded(WebSocket):
    @classmethod
    def process_request(cls, request: Request) -> None:
        if "token=s3cret" not in request.path.partition("?")[2].split("&"):
            raise HandshakeRejected(401, "token required", [("WWW-Authenticate", 'Bearer realm="ws"')])


class LastOffer(WebSocket):
    seen: list[tuple[str, list[str], object]] = []

    @classmethod
    def select_subprotocol(
        cls, request: Request, offered: list[str], supported: Sequence[str] | None
    ) -> str | None:
        cls.seen.append((request.path, offered, supported))
        return offered[-1]


class Broken(WebSocket):
    @classmethod
    def process_request(cls, request: Request) -> None:
        raise RuntimeError("bug in a hook")


class Unoffered(WebSocket):
    @classmethod
    def select_subprotocol(
        cls, request: Request, offered: list[str], supported: Sequence[str] | None
    ) -> str | None:
        return "not-offered"


def refusal(request: Request, policy: type[WebSocket], protocols: list[str] | None = None) -> HandshakeError:
    with pytest.raises(HandshakeError) as exc_info:
        accept(request, protocols, policy=policy)
    return exc_info.value


@pytest.mark.parametrize("origin", ["http://example.com", "HTTP://EXAMPLE.COM", "http://Example.com"])
def test_policy_allowed_origin_is_accepted(origin: str) -> None:
    assert accept(parsed(request_bytes(replace={"Origin": origin})), policy=OnlyExample).response


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "http://example.com:8080", "https://example.com", "null", ""]
)
def test_policy_foreign_origin_gets_403(origin: str) -> None:
    error = refusal(parsed(request_bytes(replace={"Origin": origin})), OnlyExample)
    assert error.status == 403
    assert b"403 Forbidden" in error_response(error)


def test_policy_two_origin_headers_do_not_match() -> None:
    request = parsed(request_bytes(add=[("Origin", "http://example.com")]))
    assert refusal(request, OnlyExample).status == 403


def test_policy_missing_origin_admitted_only_with_none() -> None:
    request = parsed(request_bytes(drop=("Origin",)))
    assert accept(request, policy=OnlyExample).response

    class BrowsersOnly(WebSocket):
        origins = ("http://example.com",)

    assert refusal(request, BrowsersOnly).status == 403
    assert accept(parsed(request_bytes()), policy=BrowsersOnly).response


def test_policy_default_admits_any_origin_and_keeps_server_preference() -> None:
    request = parsed(request_bytes(replace={"Origin": "http://anywhere"}))
    accepted = accept(request, ["superchat", "chat"], policy=WebSocket)
    assert accepted.subprotocol == "superchat"
    assert accept(request, None, policy=WebSocket).subprotocol is None


def test_policy_validation_comes_first() -> None:
    """An invalid request gets its 400/426 even when the origin would be refused too."""
    request = parsed(request_bytes(replace={"Origin": "http://evil", "Sec-WebSocket-Version": "8"}))
    assert refusal(request, Guarded).status == 426
    assert refusal(parsed(request_bytes(drop=("Host",))), Broken).status == 400


def test_policy_origin_is_checked_before_process_request() -> None:
    class Both(Guarded):
        origins = ["http://example.com"]

    assert refusal(parsed(request_bytes(replace={"Origin": "http://evil"})), Both).status == 403
    assert refusal(parsed(request_bytes()), Both).status == 401


def test_process_request_rejection_status_reason_and_headers() -> None:
    error = refusal(parsed(request_bytes("GET /chat?token=wrong HTTP/1.1")), Guarded)
    assert isinstance(error, HandshakeRejected)
    assert (error.status, error.reason) == (401, "token required")
    status, headers = response_headers(error_response(error))
    assert status == "HTTP/1.1 401 Unauthorized"
    assert headers["www-authenticate"] == 'Bearer realm="ws"'
    assert accept(parsed(request_bytes("GET /chat?a=1&token=s3cret HTTP/1.1")), policy=Guarded).response


def test_handshake_rejected_defaults_and_checks() -> None:
    error = HandshakeRejected(403)
    assert (error.status, error.reason, error.headers) == (403, "Forbidden", [])
    assert HandshakeRejected(599).reason == "Error"
    with pytest.raises(ValueError, match="status"):
        HandshakeRejected(101)
    with pytest.raises(ValueError, match="header"):
        HandshakeRejected(401, headers=[("WWW-Authenticate", "Basic\r\nX-Injected: 1")])


def test_select_subprotocol_hook_sees_request_offers_and_server_protocols() -> None:
    LastOffer.seen.clear()
    accepted = accept(parsed(request_bytes()), ["chat"], policy=LastOffer)
    assert accepted.subprotocol == "superchat"
    status, headers = response_headers(accepted.response)
    assert headers["sec-websocket-protocol"] == "superchat"
    assert LastOffer.seen == [("/chat", ["chat", "superchat"], ["chat"])]


def test_select_subprotocol_hook_not_called_without_offer() -> None:
    LastOffer.seen.clear()
    accepted = accept(parsed(request_bytes(drop=("Sec-WebSocket-Protocol",))), ["chat"], policy=LastOffer)
    assert accepted.subprotocol is None
    assert LastOffer.seen == []


def test_select_subprotocol_hook_may_choose_none() -> None:
    accepted = accept(parsed(request_bytes()), ["mqtt"], policy=WebSocket)
    assert accepted.subprotocol is None
    assert b"Sec-WebSocket-Protocol" not in accepted.response


def test_subprotocol_not_offered_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="wsloop.handshake"):
        error = refusal(parsed(request_bytes()), Unoffered)
    assert error.status == 500
    assert "not-offered" in caplog.text


def test_hook_raising_is_logged_and_a_500(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="wsloop.handshake"):
        error = refusal(parsed(request_bytes()), Broken)
    assert error.status == 500
    assert not isinstance(error, HandshakeRejected)
    assert "bug in a hook" not in error.reason  # the client learns nothing of the bug
    records = [r for r in caplog.records if r.name == "wsloop.handshake"]
    assert records and records[0].exc_info is not None
    assert "Broken" in records[0].getMessage()


# ------------------------------------------------- strict head parsing (issue 13, item 16)

SMUGGLING_HEADS = {
    # RFC 9112: each of these is a 400 (a proxy that reads it differently could be smuggled past)
    "bare-lf-in-value": b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\nHost: evil\r\n\r\n",
    "bare-cr-in-value": b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\rHost: evil\r\n\r\n",
    "nul-in-name": b"GET / HTTP/1.1\r\nHost: h\r\nX\x00A: 1\r\n\r\n",
    "space-in-name": b"GET / HTTP/1.1\r\nHost: h\r\nX A: 1\r\n\r\n",
    "nul-in-value": b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\x002\r\n\r\n",
    "ctl-in-value": b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\x1b2\r\n\r\n",
    "del-in-value": b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\x7f\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n 2\r\n\r\n",
    "obs-fold-tab": b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\t2\r\n\r\n",
    "bare-cr-in-path": b"GET /a\rb HTTP/1.1\r\nHost: h\r\n\r\n",
    "nul-in-path": b"GET /a\x00b HTTP/1.1\r\nHost: h\r\n\r\n",
    "tab-in-path": b"GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: h\r\nHost: evil\r\n\r\n",
    "two-hosts-same": b"GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n",
    "host-with-space": b"GET / HTTP/1.1\r\nHost: h evil\r\n\r\n",
    "host-with-slash": b"GET / HTTP/1.1\r\nHost: h/evil\r\n\r\n",
    "method-not-token": b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
    "version-not-digits": b"GET / HTTP/x.y\r\nHost: h\r\n\r\n",
}


@pytest.mark.parametrize("data", list(SMUGGLING_HEADS.values()), ids=list(SMUGGLING_HEADS))
def test_parse_request_ambiguous_head_is_400(data: bytes) -> None:
    with pytest.raises(HandshakeError) as exc_info:
        parse_request(data)
    assert exc_info.value.status == 400


@pytest.mark.parametrize(
    ("line", "value"),
    [
        (b"X-A: 1\t2", "1\t2"),  # HTAB is allowed inside a value
        (b"X-A:\t 1 \t", "1"),  # optional whitespace around it
        (b"X-A: caf\xe9", "caf\xe9"),  # obs-text
        (b'X-A: a "q" (c) ~!', 'a "q" (c) ~!'),
        (b"X-A:", ""),
    ],
)
def test_parse_request_valid_field_values(line: bytes, value: str) -> None:
    request = parsed(b"GET /p?q=1&r=%20 HTTP/1.1\r\nHost: [::1]:8080\r\n" + line + b"\r\n\r\n")
    assert request.headers["x-a"] == value
    assert request.path == "/p?q=1&r=%20"


def test_parse_request_value_full_of_spaces_is_linear() -> None:
    """Field values are matched without backtracking: 16 KiB of blanks parse at once."""
    data = b"GET / HTTP/1.1\r\nHost: h\r\nX-A: " + b" \t" * 8000 + b"\x01\r\n\r\n"
    with pytest.raises(HandshakeError):
        parse_request(data, 64 * 1024)
    request = parsed(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: " + b" " * 16000 + b"x\r\n\r\n")
    assert request.headers["x-a"] == "x"


# ---------------------------------------------------------------------- the upgrade decision


class Small(WebSocket):
    max_message_size = 1024
    close_timeout = 0.5


class BrokenConstructor(WebSocket):
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("broken on purpose")


def test_policy_accepts_with_the_101_as_headers_and_bytes_and_the_class_defaults() -> None:
    a, b = socket.socketpair()
    try:
        decision = ServerPolicy(Small).respond(request_bytes() + b"early", a)
        assert isinstance(decision, Accept)
        assert decision.received == b"early"
        assert ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") in decision.headers
        assert decision.response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in decision.response
        ws = decision.websocket
        assert (ws.max_message_size, ws.close_timeout) == (1024, 0.5)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("size", [4096, None])
def test_policy_an_explicit_option_overrides_the_class_attribute(size: int | None) -> None:
    a, b = socket.socketpair()
    try:
        policy = ServerPolicy(Small, ServeOptions(max_message_size=size, close_timeout=2.0))
        decision = policy.respond(request_bytes(), a)
        assert isinstance(decision, Accept)
        assert (decision.websocket.max_message_size, decision.websocket.close_timeout) == (size, 2.0)
        assert decision.websocket.stream.max_message_size == size
    finally:
        a.close()
        b.close()


def test_policy_page_reject_and_incomplete() -> None:
    a, b = socket.socketpair()
    try:
        policy = ServerPolicy(WebSocket)
        assert policy.respond(b"GET / HTTP/1.1\r\nHost: x\r\n", a) is None
        page = policy.respond(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", a)
        assert isinstance(page, Page) and b"<html" in page.body.lower()
        head = policy.respond(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", a)
        assert isinstance(head, Page) and head.to_bytes().endswith(b"\r\n\r\n")
        no_page = ServerPolicy(WebSocket, ServeOptions(serve_page=False))
        refused = no_page.respond(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", a)
        assert isinstance(refused, Reject) and refused.status == 400
        bad = policy.respond(request_bytes(replace={"Sec-WebSocket-Version": "8"}), a)
        assert isinstance(bad, Reject) and bad.status == 426
        assert ("Sec-WebSocket-Version", "13") in bad.headers
        assert bad.to_bytes().startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    finally:
        a.close()
        b.close()


def test_policy_answers_500_when_the_handler_constructor_raises(caplog: pytest.LogCaptureFixture) -> None:
    a, b = socket.socketpair()
    try:
        with caplog.at_level(logging.ERROR, logger="wsloop.server"):
            decision = ServerPolicy(BrokenConstructor).respond(request_bytes(), a)
        assert isinstance(decision, Reject) and decision.status == 500
        assert "error creating BrokenConstructor" in caplog.text
    finally:
        a.close()
        b.close()


def test_serve_options_of_keeps_unset_and_refuses_unknown_names() -> None:
    base = ServeOptions(max_message_size=10)
    assert ServeOptions.of(base, max_message_size=UNSET).max_message_size == 10
    assert ServeOptions.of(base, max_message_size=None).max_message_size is None
    with pytest.raises(TypeError):
        ServeOptions.of(base, max_mesage_size=1)
