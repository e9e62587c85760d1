"""ws4py's ``Utf8Validator``: incremental UTF-8 validation, chunk by chunk, over Python's own
incremental UTF-8 decoder (C speed, no loop over bytes in Python)."""

from __future__ import annotations

import codecs
from typing import ClassVar

__all__ = ["Utf8Validator"]

_Decoder = codecs.getincrementaldecoder("utf-8")


def _dfa() -> list[int]:
    """Björn Höhrmann's UTF-8 DFA as ws4py tabulates it: the class of each byte value (256
    entries), then for each of the 9 states the next state by byte class (16 entries each)."""
    # Byte classes: 0 ASCII; 1, 9, 7 continuation bytes 80..8F, 90..9F, A0..BF; 8 never valid
    # (C0, C1, F5..FF); 2 C2..DF; 10 E0; 3 E1..EC, EE, EF; 4 ED; 11 F0; 6 F1..F3; 5 F4.
    runs = [(0, 128), (1, 16), (9, 16), (7, 32), (8, 2), (2, 30), (10, 1), (3, 12), (4, 1), (3, 2)]
    runs += [(11, 1), (6, 3), (5, 1), (8, 11)]
    classes = [cls for cls, count in runs for _ in range(count)]
    # States: 0 accept, 1 reject, 2 and 3 one and two continuation bytes to come, 4 after E0,
    # 5 after ED, 6 after F0, 7 after F1..F3, 8 after F4 (each of the last five restricts the
    # next continuation byte's range). Every transition not listed rejects.
    anything = (1, 9, 7)
    moves: dict[int, dict[int, int]] = {
        0: {0: 0, 2: 2, 3: 3, 10: 4, 4: 5, 11: 6, 6: 7, 5: 8},
        2: dict.fromkeys(anything, 0),
        3: dict.fromkeys(anything, 2),
        4: {7: 2},
        5: {1: 2, 9: 2},
        6: {9: 3, 7: 3},
        7: dict.fromkeys(anything, 3),
        8: {1: 3},
    }
    return classes + [moves.get(state, {}).get(cls, 1) for state in range(9) for cls in range(16)]


class Utf8Validator:
    """Validates a UTF-8 sequence fed in chunks (the text of a fragmented message, say).

    :meth:`validate` returns ws4py's quad ``(valid, ends_on_code_point, current_index,
    total_index)``. Unlike ws4py 0.6.0, whose loop counted one short on every valid chunk, the
    indexes are what its docstring promises: on success ``len(chunk)`` and the total consumed;
    on failure the index of the byte that made the sequence invalid, in the chunk and in all.
    """

    #: ws4py's table of the UTF-8 DFA it validates with (kept for code that reads it; this
    #: validator decodes with Python's codec instead).
    UTF8VALIDATOR_DFA: ClassVar[list[int]] = _dfa()
    UTF8_ACCEPT = 0
    UTF8_REJECT = 1
    _MORE = 2  # a code point is begun and not complete

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start validating a new sequence."""
        self._decoder = _Decoder()
        self.state = self.UTF8_ACCEPT
        self.codepoint = 0
        self.i = 0  # bytes consumed by validate(), all chunks together

    def _feed(self, data: bytes | bytearray | memoryview) -> int:
        """Decode ``data``; return the index in it of the byte that is invalid, or -1."""
        pending = len(self._decoder.getstate()[0])
        try:
            text = self._decoder.decode(data)
        except UnicodeDecodeError as exc:
            self.state = self.UTF8_REJECT
            # A bad lead byte is itself the culprit; otherwise the byte after the sequence's start
            # that is not a valid continuation (the decoder counts the bytes it held back too).
            culprit = exc.start if exc.reason == "invalid start byte" else exc.end
            return max(culprit - pending, 0)
        if text:
            self.codepoint = ord(text[-1])
        held = self._decoder.getstate()[0]
        if len(held) > 1 and held[0] == 0xED and held[1] >= 0xA0:
            # ED A0..BF begins a surrogate, never valid UTF-8; the decoder waits for the third
            # byte before it says so: fail at the second, as soon as it is here.
            self.state = self.UTF8_REJECT
            return len(data) - len(held) + 1
        self.state = self._MORE if held else self.UTF8_ACCEPT
        return -1

    def decode(self, b: int) -> int:
        """Take one byte: ``UTF8_ACCEPT`` once a code point is complete (in :attr:`codepoint`),
        ``UTF8_REJECT`` for invalid UTF-8, another positive number while more bytes are needed."""
        if self.state == self.UTF8_REJECT:
            return self.state
        self._feed(bytes((b,)))
        return self.state

    def validate(self, ba: bytes | bytearray | memoryview) -> tuple[bool, bool, int, int]:
        """Validate the next chunk: ``(valid, ends_on_code_point, current_index, total_index)``."""
        if self.state == self.UTF8_REJECT:
            return False, False, 0, self.i
        bad = self._feed(ba)
        if bad >= 0:
            self.i += bad
            return False, False, bad, self.i
        self.i += len(ba)
        return True, self.state == self.UTF8_ACCEPT, len(ba), self.i
