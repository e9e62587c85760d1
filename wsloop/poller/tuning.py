"""Process-wide tuning a program may ask for when it serves (the CLI does): never done by the
library on its own, since it changes the whole host process."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["tune_malloc"]

# glibc's mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MALLOC_KEEP = 8 * 1024 * 1024


def tune_malloc(keep: int = _MALLOC_KEEP) -> bool:
    """Have glibc keep up to ``keep`` bytes of freed memory in the C heap (per arena) instead of
    unmapping it after every large message; whether it was done (glibc only;
    ``WSLOOP_MALLOC_TUNING=0`` disables it). Process-wide, harmless to repeat: ``python -m wsloop
    serve`` and its workers call it; a program embedding wsloop may (1 MiB echoes ~4x faster)."""
    if os.environ.get("WSLOOP_MALLOC_TUNING", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl, macOS): nothing to tune
    return bool(mallopt(_M_TRIM_THRESHOLD, keep)) and bool(mallopt(_M_MMAP_THRESHOLD, keep))
