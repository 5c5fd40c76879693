"""CPU cost of one call in the sans-IO core (transaction layer + B2BUA), no sockets.

A scripted caller and callee exchange the messages of a basic call (INVITE, 100,
180, 200, ACK, BYE, 200) with the core; their side is built with plain string
formatting so nearly all the measured time is the gateway's. Prints calls/s of one
core, and microseconds per call, best of a few runs. This is the ceiling the asyncio
adapter and the sockets then lower.
"""

from __future__ import annotations

import itertools
import re
import time

from gateway.b2bua import B2bua, Route, RouteNeeded
from gateway.b2bua.events import B2buaEvent
from gateway.ops.native import core_build
from gateway.service.pump import CorePump
from gateway.sip.events import Endpoint
from gateway.sip.transaction_layer import TransactionLayer

GW = Endpoint("UDP", "127.0.0.1", 5060)
A = Endpoint("UDP", "127.0.0.2", 5062)
B = Endpoint("UDP", "127.0.0.3", 5080)
SDP = (
    "v=0\r\no=a 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
INVITE = (
    "INVITE sip:bob@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.2:5062;branch=z9hG4bK-{n}-inv\r\n"
    'From: "Alice" <sip:alice@127.0.0.2:5062>;tag=a{n}\r\n'
    "To: <sip:bob@127.0.0.1:5060>\r\n"
    "Call-ID: {n}@127.0.0.2\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:alice@127.0.0.2:5062>\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Type: application/sdp\r\n"
    f"Content-Length: {len(SDP)}\r\n\r\n{SDP}"
)
ACK = (
    "ACK sip:voipgw@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.2:5062;branch=z9hG4bK-{n}-ack\r\n"
    'From: "Alice" <sip:alice@127.0.0.2:5062>;tag=a{n}\r\n'
    "To: <sip:bob@127.0.0.1:5060>;tag={totag}\r\n"
    "Call-ID: {n}@127.0.0.2\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)
BYE = (
    "BYE sip:voipgw@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.2:5062;branch=z9hG4bK-{n}-bye\r\n"
    'From: "Alice" <sip:alice@127.0.0.2:5062>;tag=a{n}\r\n'
    "To: <sip:bob@127.0.0.1:5060>;tag={totag}\r\n"
    "Call-ID: {n}@127.0.0.2\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)
_COPY = re.compile(rb"^(Via|From|To|Call-ID|CSeq):[^\r]*\r\n", re.MULTILINE)


def answer(request: bytes, status: str, *, tag: bool, body: str = "") -> bytes:
    """A callee's response, copied from the request with regexes (cheap on purpose)."""
    lines = [m.group(0) for m in _COPY.finditer(request)]
    if tag:
        lines = [
            line.replace(b"\r\n", b";tag=b1\r\n") if line.startswith(b"To:") else line
            for line in lines
        ]
    head = f"SIP/2.0 {status}\r\n".encode() + b"".join(lines)
    extra = "Contact: <sip:bob@127.0.0.3:5080>\r\n"
    if body:
        extra += "Content-Type: application/sdp\r\n"
    return head + f"{extra}Content-Length: {len(body)}\r\n\r\n{body}".encode()


def run(calls: int) -> float:
    tokens = itertools.count()
    layer = TransactionLayer(local=[GW], new_token=lambda: f"t{next(tokens)}")
    b2bua = B2bua(layer, new_token=lambda: f"k{next(tokens)}")
    route = Route(targets=(B,))
    now = 0.0
    to_tag = re.compile(rb"^To:[^\r]*;tag=([^;\r]+)", re.MULTILINE)
    sent: list[tuple[bytes, Endpoint]] = []

    def route_call(call_event: B2buaEvent, now: float) -> None:
        if isinstance(call_event, RouteNeeded):
            b2bua.route_decided(call_event.call_uuid, route, now)

    # The gateway's own per-message driver (gateway.service.pump), sending to a list.
    core = CorePump(
        layer, b2bua, send=lambda data, to: sent.append((data, to)), on_call_event=route_call
    )

    def pump() -> list[tuple[bytes, Endpoint]]:
        core.pump(now)
        out = sent[:]
        sent.clear()
        return out

    started = time.perf_counter()
    for n in range(calls):
        now += 0.001
        layer.receive_message(INVITE.format(n=n).encode(), A, now)
        out = pump()
        b_invite = next(d for d, dest in out if dest == B)
        for status, tag, body in (
            ("100 Trying", False, ""),
            ("180 Ringing", True, ""),
            ("200 OK", True, SDP),
        ):
            layer.receive_message(answer(b_invite, status, tag=tag, body=body), B, now)
            out = pump()
        a_ok = next(d for d, dest in out if dest == A and d.startswith(b"SIP/2.0 200"))
        tag = to_tag.search(a_ok)
        assert tag is not None
        totag = tag.group(1).decode()
        layer.receive_message(ACK.format(n=n, totag=totag).encode(), A, now)
        pump()
        layer.receive_message(BYE.format(n=n, totag=totag).encode(), A, now)
        out = pump()
        b_bye = next(d for d, dest in out if dest == B)
        layer.receive_message(answer(b_bye, "200 OK", tag=False), B, now)
        pump()
    elapsed = time.perf_counter() - started
    assert not b2bua.calls, "calls left over"
    return calls / elapsed


def main() -> None:
    run(200)  # warm-up
    best = max(run(2000) for _ in range(3))
    print(
        f"sans-IO core (transaction layer + B2BUA, {core_build()}), basic call, one core, "
        "no sockets"
    )
    print(f"  {best:,.0f} calls/s  ({1e6 / best:.0f} us per call, 7 messages in, 9 out)")


if __name__ == "__main__":
    main()
