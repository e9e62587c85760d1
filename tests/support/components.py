"""The one rule for tests that need something outside Python's standard library (Chromium,
``redis-server``, gcc, a package of the test extras): outside CI a missing component skips the
test, saying why; in CI (``CI`` set to anything but ``""``/``0``/``false``) it fails it, so a
failed install cannot turn tests into skips while CI stays green."""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType
from typing import NoReturn


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str) -> NoReturn:
    """Skip (fail in CI) the test, or the whole module when called at import time."""
    import pytest  # here: stress scripts import the helpers that use this module without pytest

    if in_ci():
        pytest.fail(f"{reason} (CI must run this test, not skip it)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require(executable: str, how: str = "") -> str:
    """The path of ``executable`` (a name looked up on PATH, or an absolute path that must be
    executable); missing: skip, or fail in CI. ``how``: how to install it, for the message."""
    if os.path.isabs(executable):
        found = executable if os.access(executable, os.X_OK) else None
    else:
        found = shutil.which(executable)
    if found is None:
        missing(f"{executable} is not installed" + (f" ({how})" if how else ""))
    return found


def require_module(name: str, how: str = "pip install -e '.[test]'") -> ModuleType:
    """``importlib.import_module(name)``; missing: skip, or fail in CI."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"the {name} package cannot be imported ({exc}; {how})")
