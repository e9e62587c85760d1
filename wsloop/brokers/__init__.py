"""Brokers: what carries channel messages and broadcasts between processes.

:class:`InProcessBroker` (the default, this process only) and :class:`RedisBroker` (Redis pub/sub,
``pip install wsloop[redis]``). A reactor joins one with ``Reactor.use_broker()``; its hub
(:mod:`wsloop.poller.hub`) keeps one subscription per channel for all its websockets.
"""

from __future__ import annotations

from typing import Any

from .base import DEFAULT_MAX_PUBLISH_SIZE, Broker, Listener, PublishTooLarge
from .inprocess import InProcessBroker
from .redis import RedisBroker

__all__ = [
    "Broker",
    "InProcessBroker",
    "RedisBroker",
    "Listener",
    "PublishTooLarge",
    "DEFAULT_MAX_PUBLISH_SIZE",
    "make_broker",
    "check_broker_spec",
]


def make_broker(spec: str | Broker | None, **options: Any) -> Broker | None:
    """A broker from ``--broker``'s value: ``None``/``"inprocess"``/``"memory"`` (None: the
    in-process default), ``redis://...``, ``rediss://...``, ``unix://...`` (a
    :class:`RedisBroker`, made with ``options``), or a Broker as is."""
    if spec is None or isinstance(spec, Broker):
        return spec
    if spec in ("inprocess", "memory", "none", ""):
        return None
    scheme = spec.partition("://")[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        return RedisBroker(spec, **options)
    raise ValueError(f"unknown broker {spec!r}: redis://host:port/db or inprocess")


def check_broker_spec(spec: str) -> str:
    """Validate ``--broker``'s value without connecting (argparse type)."""
    if spec in ("inprocess", "memory", "none", ""):
        return spec
    scheme = spec.partition("://")[0].lower()
    if scheme not in ("redis", "rediss", "unix") or "://" not in spec:
        raise ValueError(f"{spec!r} is not redis://host:port/db or inprocess")
    return spec
