"""Load shedding in a running gateway: a stalled loop sheds new ordinary INVITEs with a
stateless 503 while an emergency call and a call in progress go through.

The stall is real: a routing hook that holds the event loop for ``STALL`` seconds
(as a slow synchronous piece of work would). A caller thread sends, while the loop is
held, new ordinary INVITEs and one emergency INVITE; they wait in the kernel's
receive queue, and the heartbeat that runs first after the stall sees a loop that is
``STALL`` late. The upstream is a real SIPp UAS.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from prometheus_client import CollectorRegistry

from gateway.b2bua import Reject, Route, RouteNeeded
from gateway.edge.overload import SHED_TAG_PREFIX, LoadMonitor, LoadShedder
from gateway.ops.metrics import Metrics
from gateway.sip.events import Endpoint
from gateway.sip.headers import parse_name_address
from gateway.sip.message import Response
from gateway.sip.parser import parse_message
from routing.config import EmergencyConfig
from routing.decision import Shed
from routing.emergency import DialPlan
from tests.interop.gateway import gateway_config, running_gateway
from tests.interop.sipp import SippUas

pytestmark = [pytest.mark.sipp, pytest.mark.asyncio]

HOST = "127.0.0.1"
#: Seconds the routing hook holds the loop on the first call.
STALL = 1.0
#: Seconds the caller waits after the first INVITE before sending the rest: the
#: gateway is then inside the stall.
INTO_STALL = 0.3
ORDINARY = 5


def _invite(n: int, user: str, port: int, local: int) -> bytes:
    return (
        f"INVITE sip:{user}@{HOST}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{local};rport;branch=z9hG4bKshed{n}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:caller@{HOST}>;tag=f{n}\r\n"
        f"To: <sip:{user}@{HOST}>\r\n"
        f"Call-ID: shed-{n}@{HOST}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:caller@{HOST}:{local}>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _ack_for(answer: Response, n: int, port: int, local: int) -> bytes:
    """The ACK of a non-2xx final (RFC 3261 17.1.1.3: same branch, the answer's To)."""
    return (
        f"ACK sip:0501234567@{HOST}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{local};rport;branch=z9hG4bKshed{n}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:caller@{HOST}>;tag=f{n}\r\n"
        f"To: {answer.headers.get('To')}\r\n"
        f"Call-ID: shed-{n}@{HOST}\r\n"
        "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def _caller(port: int) -> dict[str, list[Response]]:
    """Runs in a thread: sends the stalling call, then the rest during the stall;
    returns the final responses by Call-ID (ACKing the 503s)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    local = sock.getsockname()[1]
    finals: dict[str, list[Response]] = {}
    try:
        sock.sendto(_invite(0, "stall", port, local), (HOST, port))
        time.sleep(INTO_STALL)
        for n in range(1, ORDINARY + 1):
            sock.sendto(_invite(n, "0501234567", port, local), (HOST, port))
        # A retransmission of the first (as if its 503 were lost): shed again, the
        # same call.
        sock.sendto(_invite(1, "0501234567", port, local), (HOST, port))
        sock.sendto(_invite(99, "112", port, local), (HOST, port))
        sock.settimeout(0.2)
        deadline = time.monotonic() + STALL + 10
        wanted = {f"shed-{n}@{HOST}" for n in (0, *range(1, ORDINARY + 1), 99)}
        while time.monotonic() < deadline and not wanted <= finals.keys():
            try:
                data = sock.recv(65535)
            except TimeoutError:
                continue
            answer = parse_message(data)
            if not isinstance(answer, Response) or answer.status < 200:
                continue
            call_id = answer.headers.get("Call-ID") or ""
            finals.setdefault(call_id, []).append(answer)
            if answer.status == 503:
                n = int(call_id.split("-")[1].split("@")[0])
                sock.sendto(_ack_for(answer, n, port, local), (HOST, port))
    finally:
        sock.close()
    return finals


async def test_a_stalled_loop_sheds_ordinary_invites_and_lets_emergency_through() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    dial_plan = DialPlan(EmergencyConfig())
    monitor = LoadMonitor(shed_lag=0.05, shed_receive_queue=131072)
    shedder = LoadShedder(monitor, dial_plan, retry_after=9, tag="test")
    async with SippUas("uas-answer", host=HOST, timeout=60) as uas:
        target = Endpoint("UDP", HOST, uas.port)
        routed: list[str] = []

        def router(event: RouteNeeded) -> Route | Reject:
            user = event.request.uri.split("@")[0].removeprefix("sip:")
            routed.append(user)
            if user == "stall":
                time.sleep(STALL)  # holds the loop, as a slow synchronous step would
            return Route(
                targets=(target,), emergency=dial_plan.match(event.request.uri) is not None
            )

        doc = gateway_config(host=HOST, upstream=uas.uri, transports=("UDP",))
        async with running_gateway(doc, router=router, shedder=shedder, metrics=metrics) as (
            gateway,
            ended,
        ):
            port = gateway.transports.local[0].port
            finals = await asyncio.to_thread(_caller, port)
            for _ in range(50):  # the ACKs of the 503s
                if shedder.absorbed == ORDINARY + 1:
                    break
                await asyncio.sleep(0.02)

    ordinary = [finals.get(f"shed-{n}@{HOST}", []) for n in range(1, ORDINARY + 1)]
    for n, answers in enumerate(ordinary, start=1):
        assert [a.status for a in answers] == [503] * (2 if n == 1 else 1), finals
        for answer in answers:
            assert answer.headers.get("Retry-After") == "9"
            tag = parse_name_address(answer.headers.get("To") or "").tag
            assert tag == SHED_TAG_PREFIX + "test"
    # Shed before routing: the router saw the stalling call and the emergency call only.
    assert sorted(routed) == ["112", "stall"]
    assert [a.status for a in finals[f"shed-99@{HOST}"]][:1] == [200]
    assert [a.status for a in finals[f"shed-0@{HOST}"]][:1] == [200]
    assert shedder.shed == ORDINARY + 1  # 503s sent, the retransmission's included
    assert shedder.absorbed == ORDINARY + 1  # the 503s' ACKs, dropped unparsed
    shed_total = registry.get_sample_value("voipgw_overload_shed_total", {"reason": "load"})
    assert shed_total == ORDINARY + 1
    # A shed call is a call: each gets its finished-call event (its CDR row), once.
    shed_calls = sorted(
        (e.call_id, e.final_status, e.disposition, e.facts.shed)
        for e in ended
        if e.facts.shed is not None
    )
    assert shed_calls == [
        (f"shed-{n}@{HOST}", 503, "rejected", Shed.LOAD) for n in range(1, ORDINARY + 1)
    ]
    assert all(e.callee_dialled == f"sip:0501234567@{HOST}:{port}" for e in ended if e.facts.shed)
    assert all(e.caller == f"sip:caller@{HOST}" for e in ended if e.facts.shed)
    assert (registry.get_sample_value("voipgw_overload_state_changes_total") or 0) >= 1
    lag_sum = registry.get_sample_value("voipgw_overload_loop_lag_seconds_sum") or 0
    assert lag_sum >= STALL - INTO_STALL
    assert (
        registry.get_sample_value(
            "voipgw_calls_total", {"call_class": "unknown", "outcome": "shed"}
        )
        == ORDINARY
    )


async def test_without_load_nothing_is_shed() -> None:
    monitor = LoadMonitor(shed_lag=0.05, shed_receive_queue=131072)
    shedder = LoadShedder(monitor, DialPlan(EmergencyConfig()), retry_after=9, tag="test")
    async with SippUas("uas-answer", host=HOST, timeout=60) as uas:
        target = Endpoint("UDP", HOST, uas.port)
        doc = gateway_config(host=HOST, upstream=uas.uri, transports=("UDP",))
        async with running_gateway(
            doc, router=lambda _: Route(targets=(target,)), shedder=shedder
        ) as (gateway, ended):
            port = gateway.transports.local[0].port
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((HOST, 0))
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            local = sock.getsockname()[1]
            try:
                for n in range(1, 6):
                    await loop.sock_sendto(
                        sock, _invite(n, "0501234567", port, local), (HOST, port)
                    )
                    await asyncio.sleep(0.05)
                statuses = []
                while len(statuses) < 5:
                    data = await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)
                    answer = parse_message(data)
                    if isinstance(answer, Response) and answer.status >= 200:
                        statuses.append(answer.status)
            finally:
                sock.close()
    assert statuses == [200] * 5
    assert shedder.shed == 0
    assert not monitor.shedding


async def test_the_heartbeat_slows_down_while_the_load_is_calm() -> None:
    monitor = LoadMonitor(shed_lag=0.05, shed_receive_queue=131072)
    shedder = LoadShedder(monitor, DialPlan(EmergencyConfig()), retry_after=9, tag="test")
    doc = gateway_config(host=HOST, upstream=f"sip:{HOST}:9", transports=("UDP",))
    doc["overload"] = {"sample_interval": 0.01, "calm_sample_interval": 0.04}
    async with running_gateway(doc, shedder=shedder) as (gateway, _):
        loop = asyncio.get_running_loop()
        # On time: calm, the next heartbeat 40 ms on.
        gateway._heartbeat_at = loop.time()
        gateway._on_heartbeat()
        assert gateway._heartbeat_at - loop.time() == pytest.approx(0.04, abs=0.005)
        # 20 ms late (past a quarter of shed_lag, not past it): sampling speeds up.
        gateway._heartbeat_at = loop.time() - 0.02
        gateway._on_heartbeat()
        assert not monitor.shedding
        assert gateway._heartbeat_at - loop.time() == pytest.approx(0.01, abs=0.005)
        # Back on time: calm again at the next heartbeat.
        gateway._heartbeat_at = loop.time()
        gateway._on_heartbeat()
        assert gateway._heartbeat_at - loop.time() == pytest.approx(0.04, abs=0.005)


async def test_while_shedding_the_gateway_reads_ahead_of_the_event_loop() -> None:
    monitor = LoadMonitor(shed_lag=0.05, shed_receive_queue=131072)
    shedder = LoadShedder(monitor, DialPlan(EmergencyConfig()), retry_after=9, tag="test")
    doc = gateway_config(host=HOST, upstream=f"sip:{HOST}:9", transports=("UDP",))
    doc["overload"] = {"read_ahead": 64}
    async with running_gateway(doc, shedder=shedder) as (gateway, _):
        loop = asyncio.get_running_loop()
        assert gateway.transports.read_ahead == 0
        # A heartbeat one second late: the loop is behind, shedding starts ...
        gateway._heartbeat_at = loop.time() - 1.0
        gateway._on_heartbeat()
        assert monitor.shedding
        assert gateway.transports.read_ahead == 64
        # ... and stops at the next heartbeat on time, and reading ahead with it.
        gateway._heartbeat_at = loop.time()
        gateway._on_heartbeat()
        assert not monitor.shedding
        assert gateway.transports.read_ahead == 0
