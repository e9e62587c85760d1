"""Builds wsloop's optional C extension (wsloop._speedups, RFC 6455 masking).

Without a working compiler (or Python's headers) the build warns and installs wsloop without
it: wsloop.framing then masks in pure Python. Metadata lives in setup.cfg.
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, LinkError, PlatformError

# How a build fails without it being the project's fault: no compiler, no headers, a compiler
# that cannot run (CC=false).
_BUILD_ERRORS = (CCompilerError, CompileError, ExecError, LinkError, PlatformError, OSError)


def _warn(exc: BaseException) -> None:
    sys.stderr.write(
        f"warning: wsloop's C extension (wsloop/speedups.c) was not built ({exc}); "
        "wsloop is installed without it and masks payloads in pure Python (slower on large "
        "messages). Install a C compiler and Python's headers, then reinstall, to build it.\n"
    )


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing when the extension cannot be compiled."""

    def run(self) -> None:
        try:
            super().run()
        except _BUILD_ERRORS as exc:
            _warn(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except _BUILD_ERRORS as exc:
            _warn(exc)


setup(
    ext_modules=[Extension("wsloop._speedups", sources=["wsloop/speedups.c"], optional=True)],
    cmdclass={"build_ext": OptionalBuildExt},
)
