"""TransportManager.listen on both event loops the gateway runs on.

gateway.transport.manager is compiled by mypyc (setup.py), which checks at run time
the types the code declares; uvloop returns some values in another type than asyncio
does (``Server.sockets`` is a list, asyncio's a tuple). Every listener kind must bind
and report its port under both loops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import uvloop

from gateway.sip.events import Endpoint
from gateway.transport.manager import ListenSpec, TransportManager

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_udp_and_tcp_listeners_report_their_bound_ports(loop: str) -> None:
    async def listen() -> list[Endpoint]:
        manager = TransportManager(lambda batch: None, lambda destination: None)
        try:
            return [
                await manager.listen(ListenSpec(transport, host, 0))
                for transport in ("UDP", "TCP")
                for host in ("127.0.0.1", "::1")
            ]
        finally:
            await manager.close()

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        bound = runner.run(listen())
    assert [(e.transport, e.host) for e in bound] == [
        ("UDP", "127.0.0.1"),
        ("UDP", "::1"),
        ("TCP", "127.0.0.1"),
        ("TCP", "::1"),
    ]
    assert all(endpoint.port > 0 for endpoint in bound)
