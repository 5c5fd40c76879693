"""Runs a real :class:`gateway.service.server.Gateway` in the test's event loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from gateway.b2bua import CallEnded
from gateway.config import parse_config
from gateway.ops.metrics import Metrics
from gateway.service.server import Gateway
from tests.interop.sipp import free_port


def gateway_config(
    *, host: str, upstream: str, transports: tuple[str, ...] = ("UDP", "TCP"), **extra: Any
) -> dict[str, Any]:
    """A config document for a gateway on one loopback address and a free port."""
    port = free_port(host)
    doc: dict[str, Any] = {
        "gateway": {"instance": "test"},
        "sip": {
            "listen": [{"transport": t, "host": host, "port": port} for t in transports],
            "t1": 0.5,
        },
        "upstream": {"uri": upstream},
        "metrics": {"enabled": False},
    }
    for key, value in extra.items():
        doc.setdefault(key, {}).update(value)
    return doc


@contextlib.asynccontextmanager
async def running_gateway(
    doc: dict[str, Any], *, metrics: Metrics | None = None, **kwargs: Any
) -> AsyncIterator[tuple[Gateway, list[CallEnded]]]:
    """Starts a gateway from a config document; yields it and its finished calls."""
    ended: list[CallEnded] = []
    gateway = Gateway(parse_config(doc), call_sinks=[ended.append], metrics=metrics, **kwargs)
    await gateway.start()
    try:
        yield gateway, ended
    finally:
        await gateway.close()


def sip_target(gateway: Gateway, transport: str = "UDP") -> str:
    """host:port of the gateway's listener of a transport ([::1]:port for IPv6)."""
    endpoint = next(e for e in gateway.transports.local if e.transport == transport)
    return endpoint.host_port
