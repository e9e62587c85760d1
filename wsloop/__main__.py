import sys


def _wants_gevent(argv: list[str]) -> bool:
    if "--server=gevent" in argv:
        return True
    return any(arg == "--server" and value == "gevent" for arg, value in zip(argv, argv[1:], strict=False))


if _wants_gevent(sys.argv):
    # gevent must patch the standard library before anything else imports it.
    from gevent import monkey  # type: ignore[import-untyped]

    monkey.patch_all()

from .cli import main  # noqa: E402

raise SystemExit(main())
