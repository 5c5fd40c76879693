"""In-memory SIP network for pair tests: sans-IO cores linked by ``transfer()``.

Each :class:`Peer` is a real :class:`TransactionLayer` with a tiny scripted UA on top;
the gateway under test is a TransactionLayer + B2bua. :class:`Network` moves every
queued message to the core whose endpoint it is addressed to, with a hand-advanced
clock, so retransmissions and Timer B run in microseconds (aioquic's ``TICK``,
pjsip's loop transport). A ``drop`` predicate loses chosen messages.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.b2bua import B2bua, CallEnded, Reject, Route, RouteNeeded
from gateway.sip.builders import build_response
from gateway.sip.dialog import Dialog
from gateway.sip.events import Endpoint, RequestReceived, ResponseReceived, SipEvent
from gateway.sip.message import Headers, Request, Response
from gateway.sip.parser import parse_message
from gateway.sip.transaction_layer import TransactionLayer

SDP_OFFER = (
    b"v=0\r\no=alice 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n"
)
SDP_ANSWER = (
    b"v=0\r\no=bob 1 1 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n"
    b"m=audio 42000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def counter_tokens(prefix: str) -> Callable[[], str]:
    numbers = itertools.count(1)
    return lambda: f"{prefix}{next(numbers)}"


@dataclass
class Peer:
    """A SIP endpoint for tests: a transaction layer plus the events it received."""

    endpoint: Endpoint
    layer: TransactionLayer = field(init=False)
    events: list[SipEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.layer = TransactionLayer(
            local=[self.endpoint], new_token=counter_tokens(f"p{self.endpoint.port}x")
        )

    def collect(self) -> None:
        while (event := self.layer.next_event()) is not None:
            self.events.append(event)

    def requests(self, method: str) -> list[RequestReceived]:
        return [
            e for e in self.events if isinstance(e, RequestReceived) and e.request.method == method
        ]

    def responses(self, method: str | None = None) -> list[ResponseReceived]:
        return [
            e
            for e in self.events
            if isinstance(e, ResponseReceived)
            and (method is None or (e.response.headers.get("CSeq") or "").endswith(method))
        ]

    def statuses(self, method: str | None = None) -> list[int]:
        return [e.response.status for e in self.responses(method)]

    def invite(
        self,
        target: Endpoint,
        now: float,
        *,
        uri: str = "sip:bob@127.0.0.3",
        body: bytes = SDP_OFFER,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Request:
        headers = Headers(
            [
                ("Max-Forwards", "70"),
                ("From", f"<sip:alice@{self.endpoint.host_port}>;tag=a1"),
                ("To", f"<{uri}>"),
                ("Call-ID", f"call-{self.endpoint.port}-{now}"),
                ("CSeq", "1 INVITE"),
                ("Contact", f"<sip:alice@{self.endpoint.host_port}>"),
            ]
        )
        for name, value in extra:
            headers.add(name, value)
        if body:
            headers.add("Content-Type", "application/sdp")
        request = Request(method="INVITE", uri=uri, headers=headers, body=body)
        self.layer.send_request(request, target, now)
        return request

    def answer(
        self,
        event: RequestReceived,
        status: int,
        now: float,
        *,
        tag: str = "b1",
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> Response:
        assert event.transaction is not None
        extra = [("Contact", f"<sip:bob@{self.endpoint.host_port}>")] if status < 300 else []
        extra += headers or []
        if body:
            extra.append(("Content-Type", "application/sdp"))
        response = build_response(event.request, status, to_tag=tag, headers=extra, body=body)
        self.layer.send_response(event.transaction, response, now)
        return response

    def dialog_from(self, request: Request, response: Response) -> Dialog:
        return Dialog.as_uac(request, response)


@dataclass
class GatewayCore:
    """The gateway under test: a transaction layer and a B2BUA, routes decided by
    ``route`` (a function of RouteNeeded)."""

    endpoint: Endpoint
    route: Callable[[RouteNeeded], Route | Reject]
    layer: TransactionLayer = field(init=False)
    b2bua: B2bua = field(init=False)
    ended: list[CallEnded] = field(default_factory=list)
    b2bua_events: list[object] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.layer = TransactionLayer(local=[self.endpoint], new_token=counter_tokens("gw"))
        self.b2bua = B2bua(self.layer, new_token=counter_tokens("gwt"), no_answer_timeout=60)

    def pump(self, now: float) -> None:
        while True:
            event = self.layer.next_event()
            if event is not None:
                self.b2bua.handle_sip_event(event, now)
                continue
            call_event = self.b2bua.next_event()
            if call_event is None:
                return
            self.b2bua_events.append(call_event)
            if isinstance(call_event, RouteNeeded):
                self.b2bua.route_decided(call_event.call_uuid, self.route(call_event), now)
            elif isinstance(call_event, CallEnded):
                self.ended.append(call_event)


class Network:
    """Delivers messages between cores; ``now`` only moves when a test says so."""

    def __init__(self, gateway: GatewayCore, *peers: Peer) -> None:
        self.gateway = gateway
        self.peers = list(peers)
        self.now = 0.0
        self.drop: Callable[[bytes, Endpoint, Endpoint], bool] = lambda data, src, dst: False
        self.log: list[tuple[Endpoint, Endpoint, bytes]] = []

    def _by_address(self, destination: Endpoint) -> TransactionLayer | None:
        for layer, endpoint in self._layers():
            if (endpoint.host, endpoint.port) == (destination.host, destination.port):
                return layer
        return None

    def _layers(self) -> list[tuple[TransactionLayer, Endpoint]]:
        return [(self.gateway.layer, self.gateway.endpoint)] + [
            (p.layer, p.endpoint) for p in self.peers
        ]

    def transfer(self) -> int:
        """Delivers everything queued until the network is quiet; returns count."""
        delivered = 0
        for _ in range(1000):
            self.gateway.pump(self.now)
            for peer in self.peers:
                peer.collect()
            moved = False
            for layer, endpoint in self._layers():
                for data, destination in layer.datagrams_to_send():
                    moved = True
                    self.log.append((endpoint, destination, data))
                    if self.drop(data, endpoint, destination):
                        continue
                    target = self._by_address(destination)
                    if target is not None:
                        target.receive_message(data, endpoint, self.now)
                        delivered += 1
            if not moved:
                return delivered
        raise AssertionError("network did not settle")

    def advance(self, seconds: float, step: float = 0.25) -> None:
        """Moves the clock, firing every timer on the way."""
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for layer, _ in self._layers():
                layer.handle_timer(self.now)
            self.gateway.b2bua.handle_timer(self.now)
            self.transfer()

    def sent(self, src: Endpoint, dst: Endpoint) -> list[Request | Response]:
        return [
            parse_message(data)
            for s, d, data in self.log
            if (s.host, s.port) == (src.host, src.port) and (d.host, d.port) == (dst.host, dst.port)
        ]
