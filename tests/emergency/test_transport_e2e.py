"""An emergency INVITE too large for UDP to a UDP-only centre (issue 13, defect 7).

An office emergency INVITE carries SDP and a civic PIDF-LO, well over the 1300 bytes
at which RFC 3261 18.1.1 moves a request from UDP to TCP when the gateway listens on
TCP (the demo does). A centre that speaks only UDP, behind a firewall that drops TCP
SYNs silently, must cost the call no more than a short, bounded delay.

The firewall is a TCP listener on the centre's port whose accept queue is full
(``listen(0)`` and one connection never accepted): Linux then drops further SYNs
without an answer, the client retransmits, and ``connect`` hangs. Deterministic on
loopback, no packet filter needed.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emergency.rig import CENTRE_HOST, OFFICE_IP, call, emergency_rig, sip_ruri

pytestmark = [pytest.mark.sipp, pytest.mark.postgres, pytest.mark.asyncio]

#: The delay a UDP-only centre behind a silent firewall may add to an emergency call,
#: in seconds: the emergency TCP connect timeout (gateway/transport/hints.py, 0.5 s)
#: plus scheduling on a loaded 2-core test machine.
BOUNDED_DELAY = 1.0


@contextlib.contextmanager
def silent_tcp_port(host: str, port: int) -> Iterator[None]:
    """A TCP port whose SYNs are dropped: a listener with its accept queue full."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(0)
        filler.settimeout(1.0)
        filler.connect((host, port))  # the one connection the queue holds
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(0.3)
        with probe, pytest.raises(TimeoutError):
            probe.connect((host, port))  # the firewall is in place: SYNs go unanswered
        yield
    finally:
        filler.close()
        listener.close()


async def _office_call_through_silent_tcp(
    pg_dsn: str, tmp_path: Path, centre_params: dict[str, str]
) -> tuple[float, object]:
    async with emergency_rig(
        pg_dsn, tmp_path, transports=("UDP", "TCP"), centre_params=centre_params
    ) as rig:
        kerava = rig.centres["kerava"]
        with silent_tcp_port(CENTRE_HOST, kerava.port):
            started = time.monotonic()
            await call(rig, "alice", sip_ruri("112", rig), source=OFFICE_IP)
        reached = {c: len(p.invites) for c, p in rig.centres.items() if p.invites}
        assert reached == {"kerava": 1}, reached  # no failover to Turku meanwhile
        [invite] = kerava.invites
        assert len(invite.raw) > 1300  # RFC 3261 18.1.1 applies
        assert "SIP/2.0/UDP" in (invite.get("via") or "")
        return invite.at - started, rig.app.gateway.transports.stats


async def test_large_emergency_invite_to_a_silent_tcp_port_falls_back_to_udp_quickly(
    pg_dsn: str, tmp_path: Path
) -> None:
    # The centre's URI says nothing of transports: the size switch tries TCP, with
    # the short emergency connect timeout, then UDP (RFC 3261 18.1.1).
    delay, stats = await _office_call_through_silent_tcp(pg_dsn, tmp_path, {})
    print(f"INVITE at the centre {delay:.3f} s after the call started")
    assert delay < BOUNDED_DELAY, delay
    assert stats["connect_failed"] == 1  # type: ignore[index]


async def test_centre_uri_naming_udp_is_never_tried_over_tcp(pg_dsn: str, tmp_path: Path) -> None:
    # RFC 3263 4.1: the URI's transport parameter says how the centre is reached.
    delay, stats = await _office_call_through_silent_tcp(
        pg_dsn, tmp_path, {"kerava": ";transport=udp"}
    )
    print(f"INVITE at the centre {delay:.3f} s after the call started")
    assert stats["connect_failed"] == 0  # type: ignore[index]
    assert delay < BOUNDED_DELAY / 2, delay
