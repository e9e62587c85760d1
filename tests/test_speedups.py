"""The C masking extension (wsloop/speedups.c) against the pure-Python code it replaces.

Outside CI a missing extension (no compiler at install time) skips the C tests; in CI they fail,
so a silent fallback to pure Python cannot pass for a built extension.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from array import array
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from tests.support.components import require_module
from wsloop import framing

MaskInto = Callable[[Any, Any], None]


def naive_mask(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


@pytest.fixture(scope="module")
def c() -> ModuleType:
    return require_module("wsloop._speedups", "needs a C compiler when installing: pip install -e .")


@pytest.fixture(params=["c", "pure"])
def mask_into(request: pytest.FixtureRequest) -> MaskInto:
    if request.param == "pure":
        return framing._mask_into_pure
    module: ModuleType = request.getfixturevalue("c")
    return module.mask_into  # type: ignore[no-any-return]


def lengths() -> list[int]:
    rng = random.Random(16)
    edges = [4095, 4096, 4097, 16383, 16384, 65535, 65536, 65537, 69999]
    return [*range(0, 72), *edges, *(rng.randrange(72, 70000) for _ in range(12))]


@pytest.mark.parametrize("length", lengths())
def test_c_and_pure_agree_on_random_data_keys_and_offsets(c: ModuleType, length: int) -> None:
    rng = random.Random(length)
    backing = rng.randbytes(length + 16)
    for offset in (0, 1, 3, 5, 7):
        key = rng.randbytes(4)
        data = backing[offset : offset + length]
        expected = framing._mask_pure(data, key)
        view = memoryview(backing)[offset : offset + length]  # an unaligned start for odd offsets
        for given in (data, bytearray(data), view):
            result = c.apply_mask(given, key)
            assert type(result) is bytes
            assert result == expected
        assert c.apply_mask(view, memoryview(bytearray(key))) == expected
    if length <= 300:
        assert expected == naive_mask(data, key)


@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 125, 4097, 65537])
def test_apply_mask_round_trip_and_rfc_example(c: ModuleType, length: int) -> None:
    data = random.Random(length).randbytes(length)
    key = b"\x37\xfa\x21\x3d"
    assert c.apply_mask(c.apply_mask(data, key), key) == data
    assert c.apply_mask(b"Hello", key) == bytes([0x7F, 0x9F, 0x4D, 0x51, 0x58])  # RFC 6455 §5.7


def test_apply_mask_takes_non_contiguous_and_multibyte_buffers(c: ModuleType) -> None:
    data = random.Random(3).randbytes(1001)
    key = b"\x01\x80\xfe\x7f"
    strided = memoryview(data)[::3]
    assert c.apply_mask(strided, key) == framing._mask_pure(strided, key) == naive_mask(data[::3], key)
    values = array("I", range(100))
    assert c.apply_mask(memoryview(values), key) == naive_mask(values.tobytes(), key)
    assert c.apply_mask(values, key) == framing._mask_pure(memoryview(values), key)


@pytest.mark.parametrize("length", [0, 1, 5, 8, 13, 125, 4099, 65536, 69997])
def test_mask_into_equals_apply_mask_and_touches_only_its_buffer(
    c: ModuleType, mask_into: MaskInto, length: int
) -> None:
    rng = random.Random(length)
    for offset in (0, 1, 2, 3, 7):
        key = rng.randbytes(4)
        whole = bytearray(rng.randbytes(length + 16))
        before = bytes(whole)
        expected = c.apply_mask(before[offset : offset + length], key)
        assert mask_into(memoryview(whole)[offset : offset + length], key) is None
        assert whole[offset : offset + length] == expected
        # The bytes around the slice are untouched.
        assert whole[:offset] == before[:offset]
        assert whole[offset + length :] == before[offset + length :]
        plain = bytearray(before)
        mask_into(plain, key)
        assert plain == c.apply_mask(before, key)


def test_buffers_are_released(c: ModuleType, mask_into: MaskInto) -> None:
    # A bytearray cannot be resized while a buffer export is held: every path must release it.
    data = bytearray(b"0123456789")
    key = bytearray(b"abcd")
    c.apply_mask(data, key)
    mask_into(data, key)
    with pytest.raises(ValueError):
        mask_into(data, bytearray(b"abc"))
    with pytest.raises(ValueError):
        c.apply_mask(data, bytearray(b"abcde"))
    data.append(1)
    key.append(1)


@pytest.mark.parametrize("key", [b"", b"abc", b"abcde", bytes(8)])
def test_a_key_of_other_than_4_bytes_is_a_value_error(c: ModuleType, mask_into: MaskInto, key: bytes) -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        c.apply_mask(b"payload", key)
    with pytest.raises(ValueError, match="4 bytes"):
        mask_into(bytearray(b"payload"), key)


def test_wrong_types_are_type_errors(c: ModuleType, mask_into: MaskInto) -> None:
    with pytest.raises(TypeError):
        c.apply_mask("text", b"abcd")
    with pytest.raises(TypeError):
        c.apply_mask(b"data", "abcd")
    with pytest.raises(TypeError):
        c.apply_mask(b"data")
    with pytest.raises(TypeError):
        c.apply_mask(b"data", b"abcd", 0)
    with pytest.raises(TypeError):
        mask_into(bytearray(4), "abcd")


@pytest.mark.parametrize(
    "make",
    [
        lambda: b"read-only",
        lambda: memoryview(b"read-only"),
        lambda: memoryview(bytearray(b"not contiguous"))[::2],
    ],
    ids=["bytes", "readonly-view", "strided-view"],
)
def test_mask_into_refuses_readonly_and_non_contiguous_buffers(
    mask_into: MaskInto, make: Callable[[], Any]
) -> None:
    buffer = make()
    before = bytes(buffer)
    with pytest.raises(TypeError, match="writable"):
        mask_into(buffer, b"abcd")
    assert bytes(buffer) == before


def test_framing_uses_the_extension_unless_told_not_to(c: ModuleType) -> None:
    if os.environ.get("WSLOOP_NO_SPEEDUPS"):
        assert framing.SPEEDUPS is False
        assert framing.mask is framing._mask_pure
        assert framing.mask_into is framing._mask_into_pure
    else:
        assert framing.SPEEDUPS is True
        assert framing.mask is c.apply_mask
        assert framing.mask_into is c.mask_into


@pytest.mark.parametrize("value, expected", [("", "True"), ("1", "False")])
def test_wsloop_no_speedups_is_read_at_import(c: ModuleType, value: str, expected: str) -> None:
    env = {**os.environ, "WSLOOP_NO_SPEEDUPS": value}
    code = "import wsloop.framing as f; print(f.SPEEDUPS, f.mask(b'Hello', b'\\x37\\xfa\\x21\\x3d').hex())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [expected, "7f9f4d5158"]
