"""What a shed call costs the event loop, with and without its CDR row (issue 17).

A call shed for load (``gateway.edge.overload``) is answered 503 statelessly and gets
one CDR row per INVITE transaction (``Gateway._first_shed`` / ``_record_shed``). Under
a flood that row is written for every excess call, so this measures its price on the
loop against the rest of shedding, in one process and alternating:

* ``503 only``: ``Gateway._shed`` with no call sink (parse, stateless 503, send, the
  once-per-transaction check and the metrics);
* ``503 + row``: the same with the CDR sink ``voipgw run`` installs
  (``cdr.call_record.record_of``) and the writer's CSV encoding of its batch
  (``cdr.record.encode_csv_batch``, which the writer runs on the loop when it writes
  the batch to the spool). The spool's fsync and PostgreSQL's COPY are off the loop
  and not counted.

Rounds alternate (off, on, off, on ...) on one gateway so that machine load, which
moves on this shared box, hits both alike; printed: microseconds per shed call for
each (median of the rounds, min-max), the row's share, and what the row costs as a
share of one core at ``--shed-rate`` shed calls per second (at 2x R0 about half the
offered calls are shed).

``python -m tests.bench.bench_shed`` (inside ``deploy/loopback-only.sh``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import statistics
import time

from prometheus_client import CollectorRegistry

from cdr.call_record import record_of
from cdr.record import CallDetailRecord, encode_csv_batch
from gateway.b2bua import CallEnded
from gateway.edge.overload import LoadMonitor, LoadShedder, OverloadState
from gateway.ops.metrics import Metrics
from gateway.sip.events import Endpoint
from routing.config import EmergencyConfig
from routing.emergency import DialPlan
from tests.interop.gateway import gateway_config, running_gateway

HOST = "127.0.0.1"
#: Records per CSV batch, as the writer cuts them under a flood (its batch_size).
BATCH = 500


def _invite(n: int, gateway_port: int, local: int) -> bytes:
    """The flood's INVITE (tests/security/sipp/uac-call-or-503.xml), call ``n``."""
    body = (
        "v=0\r\no=flood 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n"
        "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    return (
        f"INVITE sip:0501234567@{HOST}:{gateway_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{local};branch=z9hG4bK-{n}-1-0\r\n"
        f'From: "flood" <sip:flood@{HOST}:{local}>;tag={n}SIPpTag001\r\n'
        f"To: <sip:0501234567@{HOST}:{gateway_port}>\r\n"
        f"Call-ID: {n}-bench@{HOST}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:flood@{HOST}:{local};transport=UDP>\r\n"
        "Max-Forwards: 70\r\nSubject: uac-call-or-503\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


class CdrSink:
    """``voipgw run``'s CDR sink without PostgreSQL: the record, then its batch's CSV."""

    def __init__(self) -> None:
        self.batch: list[CallDetailRecord] = []
        self.encoded = 0

    def __call__(self, event: CallEnded) -> None:
        self.batch.append(record_of(event, wall_offset=0.0, instance="bench"))
        if len(self.batch) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            self.encoded += len(encode_csv_batch(self.batch))
            self.batch.clear()


async def run(args: argparse.Namespace) -> None:
    # The shedding's periodic warning is not a figure of this benchmark.
    logging.getLogger("voipgw.server").setLevel(logging.ERROR)
    monitor = LoadMonitor(shed_lag=0.05, shed_receive_queue=131072)
    monitor.state = OverloadState.SHEDDING
    shedder = LoadShedder(monitor, DialPlan(EmergencyConfig()), retry_after=5, tag="bench")
    # The 503s go to a bound socket that is never read (no ICMP port unreachable).
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    caller.bind((HOST, 0))
    local = caller.getsockname()[1]
    sink = CdrSink()
    timings: dict[bool, list[float]] = {False: [], True: []}
    doc = gateway_config(host=HOST, upstream=f"sip:{HOST}:9", transports=("UDP",))
    async with running_gateway(doc, shedder=shedder, metrics=Metrics(CollectorRegistry())) as (
        gateway,
        _,
    ):
        assert gateway.layer is not None
        port = gateway.transports.local[0].port
        source = Endpoint("UDP", HOST, local)
        layer = gateway.layer
        n = 0
        for round_ in range(2 * args.rounds):
            rows = round_ % 2 == 1
            gateway.call_sinks = [sink] if rows else []
            invites = [_invite(n + i, port, local) for i in range(args.calls)]
            n += args.calls
            started = time.perf_counter()
            for data in invites:
                gateway._shed(shedder, layer, data, source, 1.0)
            if rows:
                sink.flush()
            timings[rows].append((time.perf_counter() - started) / args.calls)
            await asyncio.sleep(0.05)  # let the 503s leave
    caller.close()

    off, on = (statistics.median(timings[k]) for k in (False, True))
    spread = {k: (min(v) * 1e6, max(v) * 1e6) for k, v in timings.items()}
    print(f"{args.rounds} rounds of {args.calls} shed INVITEs each way, alternating")
    print(
        f"  503 only:  {off * 1e6:6.1f} us per shed call"
        f"  (min-max {spread[False][0]:.1f}-{spread[False][1]:.1f})"
    )
    print(
        f"  503 + row: {on * 1e6:6.1f} us per shed call"
        f"  (min-max {spread[True][0]:.1f}-{spread[True][1]:.1f})"
    )
    row = on - off
    print(
        f"  the row: {row * 1e6:.1f} us = {100 * row / on:.0f} % of a shed call; at "
        f"{args.shed_rate:g} shed calls/s {100 * row * args.shed_rate:.1f} % of one core"
        f" (shedding with the row: {100 * on * args.shed_rate:.1f} %)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_shed", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="shed INVITEs per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds each way")
    parser.add_argument("--shed-rate", type=float, default=500.0, help="shed calls per second")
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
