"""Overload and flood: ordinary calls at 5x capacity while emergency calls keep connecting.

Set-up (all on loopback, one process for the gateway)::

    SIPp flood (uac-call-or-503, 127.0.0.1) ─┐
    SIPp 112 caller (uac-basic-call, 127.0.0.1) ─┼─▶ guard ─▶ voipgw ─▶ SIPp uas-answer
    OPTIONS monitor (127.0.0.3) ──────────────┘

The gateway's capacity is set small and known instead of measured: ``max_calls``
calls in progress (``[overload] max_calls``) held ``hold`` seconds each sustain
``max_calls / hold`` calls per second, and the flood offers ``factor`` (5) times that.
The router sheds ordinary calls above ``max_calls`` with 503 + Retry-After exactly as
``gateway.service.router.CallRouter`` does (RFC 3261 21.5.4), and never sheds a call whose
Request-URI ``routing.emergency.DialPlan`` recognises. The emergency
caller shares the flood's source address, the worst case for per-source limits.

Two guard modes:

* ``capacity``: the guard's per-source limits are raised above the flood, so every
  INVITE reaches the router and the excess gets a fast 503 (what a trunk or PBX sees);
* ``guard``: the default guard, whose per-source INVITE bucket drops most of the
  flood silently (what a single attacking address sees); the flood's calls time out.

Figures: goodput (ordinary calls answered per second), 503s sent and their latency
at the gateway (INVITE in -> 503 out), emergency calls placed / connected and their
INVITE -> 200 set-up p50/p99 as SIPp measured them, OPTIONS answered by the monitor
during the flood and their worst round trip, and the guard's counters.

``python -m tests.bench.bench_overload --duration 30`` (inside
``deploy/loopback-only.sh``) runs it; tests/security/test_flood.py runs a shorter one.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import socket
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway.b2bua import CallEnded, Reject, Route, RouteNeeded
from gateway.edge.guard import Guard
from gateway.edge.guard_config import GuardConfig, RateLimit
from gateway.sip.events import Endpoint
from routing.config import EmergencyConfig
from routing.decision import CallFacts, Shed
from routing.emergency import DialPlan
from tests.interop.gateway import gateway_config, running_gateway, sip_target
from tests.interop.sipp import SippResult, SippUas, run_uac

HOST = "127.0.0.1"
MONITOR_HOST = "127.0.0.3"
FLOOD_SCENARIO = Path(__file__).resolve().parents[1] / "security" / "sipp" / "uac-call-or-503.xml"
#: Seconds each emergency call stays up before the caller hangs up.
EMERGENCY_HOLD = 0.5
#: Seconds between OPTIONS of the monitor.
OPTIONS_INTERVAL = 0.5


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.1f} ms"


class ShedRouter:
    """Routes every call to one next hop; sheds ordinary calls above ``max_calls``.

    The overload rule is routing.policy.decide's, without the directory
    and classification that need a sites file: ``active_calls > max_calls`` gives an
    ordinary call 503 with Retry-After; an emergency call is always routed.
    """

    def __init__(
        self, target: Endpoint, max_calls: int, retry_after: int, emergency: EmergencyConfig
    ) -> None:
        self.target = target
        self.max_calls = max_calls
        self.retry_after = retry_after
        self.dial_plan = DialPlan(emergency)

    def __call__(self, event: RouteNeeded) -> Route | Reject:
        emergency = self.dial_plan.match(event.request.uri) is not None
        if not emergency and event.active_calls > self.max_calls:
            return Reject(
                status=503,
                headers=(("Retry-After", str(self.retry_after)),),
                facts=CallFacts(shed=Shed.CAPACITY),
            )
        return Route(targets=(self.target,), emergency=emergency)


@dataclass(slots=True)
class OptionsMonitor:
    """Sends OPTIONS to the gateway every OPTIONS_INTERVAL and times the answers."""

    target: tuple[str, int]
    sent: int = 0
    answered: int = 0
    rtts: list[float] = field(default_factory=list)

    async def run(self, duration: float) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((MONITOR_HOST, 0))
        sock.setblocking(False)
        port = sock.getsockname()[1]
        end = loop.time() + duration
        try:
            while loop.time() < end:
                self.sent += 1
                n = self.sent
                data = (
                    f"OPTIONS sip:{self.target[0]}:{self.target[1]} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {MONITOR_HOST}:{port};rport;branch=z9hG4bKmon{n}\r\n"
                    "Max-Forwards: 70\r\n"
                    f"From: <sip:monitor@{MONITOR_HOST}>;tag=m{n}\r\n"
                    f"To: <sip:{self.target[0]}>\r\nCall-ID: monitor-{n}\r\n"
                    f"CSeq: {n} OPTIONS\r\nUser-Agent: voipgw-monitor\r\nContent-Length: 0\r\n\r\n"
                ).encode()
                started = loop.time()
                await loop.sock_sendto(sock, data, self.target)
                try:
                    while True:
                        reply = await asyncio.wait_for(loop.sock_recv(sock, 65535), 2.0)
                        if f"monitor-{n}".encode() in reply and b" 200 " in reply[:16]:
                            break
                except TimeoutError:
                    continue
                self.answered += 1
                self.rtts.append(loop.time() - started)
                await asyncio.sleep(max(0.0, OPTIONS_INTERVAL - (loop.time() - started)))
        finally:
            sock.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class FloodResult:
    """What one flood run measured."""

    mode: str
    duration: float
    """Seconds the flood ran."""
    capacity: float
    """Ordinary calls per second the gateway was set to sustain."""
    offered: float
    """Flood rate, in calls per second."""
    flood: SippResult
    emergency: SippResult
    ended: tuple[CallEnded, ...]
    options_sent: int
    options_answered: int
    options_worst_rtt: float | None
    guard: dict[str, int]

    @property
    def ordinary_answered(self) -> int:
        return sum(1 for e in self.ended if not e.emergency and e.disposition == "answered")

    @property
    def shed(self) -> list[CallEnded]:
        return [e for e in self.ended if e.facts.shed is Shed.CAPACITY]

    @property
    def shed_latencies(self) -> list[float]:
        return sorted(e.ended_at - e.setup_at for e in self.shed)

    @property
    def emergency_connected(self) -> int:
        return sum(1 for e in self.ended if e.emergency and e.disposition == "answered")

    def report(self) -> str:
        lat = self.shed_latencies
        p99 = lat[max(0, math.ceil(0.99 * len(lat)) - 1)] if lat else None
        e50, e99 = self.emergency.percentile(0.5), self.emergency.percentile(0.99)
        ms = _ms
        return "\n".join(
            [
                f"mode {self.mode}: {self.duration:.0f} s, capacity {self.capacity:.0f} calls/s, "
                f"flood offered {self.offered:.0f} calls/s ({self.offered / self.capacity:.1f}x)",
                f"  flood SIPp: {self.flood.outgoing_calls} INVITEs placed, "
                f"{self.flood.successful_calls} completed (answered or 503), "
                f"{self.flood.failed_calls} failed, {self.flood.retransmissions} retransmissions",
                f"  goodput: {self.ordinary_answered} ordinary calls answered = "
                f"{self.ordinary_answered / self.duration:.1f} calls/s",
                f"  503 sent: {len(self.shed)}; INVITE->503 at SIPp p50 "
                f"{ms(self.flood.percentile(0.5))} p99 {ms(self.flood.percentile(0.99))}, "
                f"in the gateway p50 {ms(statistics.median(lat) if lat else None)} p99 {ms(p99)}",
                f"  emergency: {self.emergency.outgoing_calls} placed, "
                f"{self.emergency.successful_calls} completed by SIPp, "
                f"{self.emergency_connected} answered at the gateway; "
                f"INVITE->200 p50 {ms(e50)} p99 {ms(e99)}",
                f"  OPTIONS monitor: {self.options_answered}/{self.options_sent} answered, "
                f"worst {ms(self.options_worst_rtt)}",
                f"  guard: {self.guard}",
            ]
        )


def flood_guard(mode: str, emergency: EmergencyConfig) -> Guard:
    """The guard of a mode: ``guard`` is the default; ``capacity`` lets the flood in."""
    config = GuardConfig()
    if mode == "capacity":
        config = dataclasses.replace(
            config,
            requests=RateLimit(rate=100_000, burst=100_000),
            invites=RateLimit(rate=100_000, burst=100_000),
        )
    return Guard(config, dial_plan=DialPlan(emergency))


async def run_flood(
    *,
    duration: float = 30.0,
    max_calls: int = 20,
    hold: float = 1.0,
    factor: float = 5.0,
    mode: str = "capacity",
) -> FloodResult:
    """Runs one flood with one emergency call per second and returns the figures.

    Args:
        duration: seconds of flood (at most 60).
        max_calls: ``[overload] max_calls`` of the gateway.
        hold: seconds each answered ordinary call lasts.
        factor: flood rate over the sustainable rate ``max_calls / hold``.
        mode: "capacity" or "guard" (see the module docstring).
    """
    if not 1 <= duration <= 60:
        raise ValueError("duration must be 1-60 s")
    capacity = max_calls / hold
    rate = capacity * factor
    emergency_config = EmergencyConfig()
    guard = flood_guard(mode, emergency_config)
    async with SippUas("uas-answer", host=HOST, timeout=duration + 90) as uas:
        router = ShedRouter(Endpoint("UDP", HOST, uas.port), max_calls, 5, emergency_config)
        doc = gateway_config(
            host=HOST,
            upstream=uas.uri,
            transports=("UDP",),
            overload={"max_calls": max_calls},
            sip={"max_transactions": 200_000},
        )
        async with running_gateway(doc, router=router, guard=guard) as (gateway, ended):
            target = sip_target(gateway)
            port = int(target.rsplit(":", 1)[1])
            monitor = OptionsMonitor((HOST, port))
            calls = max(1, round(rate * duration))
            started = time.monotonic()
            flood, emergency, _ = await asyncio.gather(
                run_uac(
                    FLOOD_SCENARIO,
                    target,
                    calls=calls,
                    rate=rate,
                    timeout=duration + 45,
                    service="0501234567",
                    call_duration=hold,
                    extra_args=["-recv_timeout", "10000", "-max_recv_loops", "10000"],
                ),
                run_uac(
                    "uac-basic-call",
                    target,
                    calls=max(1, round(duration)),
                    rate=1.0,
                    timeout=duration + 45,
                    service="112",
                    call_duration=EMERGENCY_HOLD,
                ),
                monitor.run(duration),
            )
            elapsed = time.monotonic() - started
            for _ in range(100):  # let the last BYEs and ACKs land
                if gateway.active_calls == 0:
                    break
                await asyncio.sleep(0.1)
            stats = dataclasses.asdict(guard.stats)
    return FloodResult(
        mode=mode,
        duration=min(elapsed, duration) if elapsed else duration,
        capacity=capacity,
        offered=rate,
        flood=flood,
        emergency=emergency,
        ended=tuple(ended),
        options_sent=monitor.sent,
        options_answered=monitor.answered,
        options_worst_rtt=max(monitor.rtts) if monitor.rtts else None,
        guard=stats,
    )


def main() -> None:
    """Runs the flood in each requested mode and prints the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds (<= 60)")
    parser.add_argument("--max-calls", type=int, default=20)
    parser.add_argument("--hold", type=float, default=1.0)
    parser.add_argument("--factor", type=float, default=5.0)
    parser.add_argument("--mode", choices=("capacity", "guard", "both"), default="both")
    args = parser.parse_args()
    modes = ("capacity", "guard") if args.mode == "both" else (args.mode,)
    for mode in modes:
        result = asyncio.run(
            run_flood(
                duration=args.duration,
                max_calls=args.max_calls,
                hold=args.hold,
                factor=args.factor,
                mode=mode,
            )
        )
        print(result.report(), flush=True)


if __name__ == "__main__":
    main()


__all__ = ["FloodResult", "ShedRouter", "main", "run_flood"]
