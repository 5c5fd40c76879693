"""gateway/transport/hints.py and the transport manager's use of it (issue 13, defect 7).

A TCP connection is never opened to a next hop known to speak only UDP (the
transaction layer resends over UDP at once, RFC 3261 18.1.1), and one to an emergency
centre gives up after EMERGENCY_CONNECT_TIMEOUT when the SYNs go unanswered.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from gateway.sip.events import Endpoint
from gateway.transport.hints import EMERGENCY_CONNECT_TIMEOUT, PeerHints
from gateway.transport.manager import CONNECT_TIMEOUT, ListenSpec, TransportManager
from tests.emergency.test_transport_e2e import silent_tcp_port

HOST = "127.0.112.1"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def test_route_hints_from_the_uri() -> None:
    hints = PeerHints()
    endpoint = Endpoint("UDP", HOST, 5091)
    hints.learn_route("sip:112@127.0.112.1:5091;transport=udp", [endpoint], emergency=True)
    assert hints.udp_only(HOST, 5091)
    assert hints.connect_timeout(HOST, 5091, CONNECT_TIMEOUT) == EMERGENCY_CONNECT_TIMEOUT
    # The URI changed (no transport parameter) and it is no centre any more.
    hints.learn_route("sip:112@127.0.112.1:5091", [endpoint], emergency=False)
    assert not hints.udp_only(HOST, 5091)
    assert hints.connect_timeout(HOST, 5091, CONNECT_TIMEOUT) == CONNECT_TIMEOUT
    # IPv6 text forms are one address.
    hints.learn_route(
        "sip:[0:0::1]:5090;transport=UDP", [Endpoint("UDP", "0::1", 5090)], emergency=False
    )
    assert hints.udp_only("::1", 5090)


def test_hints_are_bounded() -> None:
    hints = PeerHints(max_entries=2)
    for port in (1, 2, 3):
        hints.learn_dns(HOST, port, udp_only=True)
    assert not hints.udp_only(HOST, 1)
    assert hints.udp_only(HOST, 2) and hints.udp_only(HOST, 3)


class Errors(list[tuple[float, Endpoint]]):
    """Transport errors reported, with when; ``reported`` is set at the first."""

    def __init__(self) -> None:
        super().__init__()
        self.reported = asyncio.Event()

    def __call__(self, endpoint: Endpoint) -> None:
        self.append((time.monotonic(), endpoint))
        self.reported.set()


async def _manager(hints: PeerHints) -> tuple[TransportManager, Errors]:
    errors = Errors()
    manager = TransportManager(lambda batch: None, errors, hints=hints)
    await manager.listen(ListenSpec("TCP", "127.0.0.1", 0))
    return manager, errors


@pytest.mark.asyncio
async def test_no_tcp_connection_to_a_udp_only_next_hop() -> None:
    port = free_tcp_port()
    accepted: list[object] = []
    server = await asyncio.start_server(lambda r, w: accepted.append(w), HOST, port)
    hints = PeerHints()
    hints.learn_dns(HOST, port, udp_only=True)
    manager, errors = await _manager(hints)
    try:
        manager.send(b"INVITE sip:x SIP/2.0\r\n\r\n", Endpoint("TCP", HOST, port))
        await asyncio.sleep(0.2)
        assert [e for _, e in errors] == [Endpoint("TCP", HOST, port)]
        assert accepted == []  # never tried
        assert manager.stats["tcp_skipped_udp_only"] == 1
        assert manager.stats["connect_failed"] == 0
    finally:
        await manager.close()
        server.close()


@pytest.mark.asyncio
async def test_tcp_to_a_silent_emergency_centre_gives_up_quickly() -> None:
    port = free_tcp_port()
    hints = PeerHints()
    hints.learn_route(f"sip:112@{HOST}:{port}", [Endpoint("UDP", HOST, port)], emergency=True)
    manager, errors = await _manager(hints)
    try:
        with silent_tcp_port(HOST, port):
            started = time.monotonic()
            manager.send(b"INVITE sip:x SIP/2.0\r\n\r\n", Endpoint("TCP", HOST, port))
            await asyncio.wait_for(errors.reported.wait(), CONNECT_TIMEOUT + 1)
        [(at, endpoint)] = errors
        assert endpoint == Endpoint("TCP", HOST, port)
        assert EMERGENCY_CONNECT_TIMEOUT <= at - started < EMERGENCY_CONNECT_TIMEOUT + 0.3
        assert manager.stats["connect_failed"] == 1
    finally:
        await manager.close()
