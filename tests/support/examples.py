"""Run ws4py's documented examples (``../shared/examples``, imports changed to wsloop) unmodified."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from .components import missing
from .serverproc import REPO, ServerProcess
from .sockets import port_is_free

ROOT = REPO
EXAMPLES = Path(os.environ.get("WSLOOP_EXAMPLES", ROOT.parent / "shared" / "examples"))


def example_path(name: str) -> Path:
    path = EXAMPLES / name
    if not path.exists():
        missing(f"{path} is not here (the examples live in the shared folder beside the repo)")
    return path


class ExampleProcess(ServerProcess):
    """An example script running as it is, with wsloop importable; ready once ``port`` accepts."""

    def __init__(self, name: str, port: int, timeout: float = 20.0) -> None:
        path = example_path(name)
        if not port_is_free(port):
            pytest.skip(f"port {port}, which the example {name} uses, is busy")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        argv = [sys.executable, str(path)]
        super().__init__(argv=argv, ready=None, port=port, timeout=timeout, env=env, cwd=ROOT)
