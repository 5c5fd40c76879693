"""The demo peers' own logic: the report line, the answering agent, the tone, and
one peer over real UDP on loopback.

The agent is paired in memory with a plain transaction layer as the caller (the
shape of tests/sipnet.py: messages moved by hand, ``now`` advanced by hand).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import struct
from datetime import UTC, datetime

import pytest

from gateway.demo.agent import AnsweringAgent, CallEnded, CallOffered
from gateway.demo.peer import DemoPeer, Tone, encoded_tone, tone_pcm
from gateway.demo.report import body_parts, describe_location, emergency_line, pbx_line
from gateway.rtp.codecs import SAMPLE_RATE
from gateway.sip.builders import build_cancel
from gateway.sip.dialog import Dialog
from gateway.sip.events import Endpoint, ResponseReceived, SipEvent
from gateway.sip.framing import StreamFramer
from gateway.sip.message import Headers, Request, Response
from gateway.sip.transaction_layer import TransactionLayer
from routing.model import CivicAddress, Location
from routing.pidf import build_multipart, build_pidf, geolocation_headers
from tests.interop.sipp import free_port
from tests.sipnet import SDP_OFFER, counter_tokens

CALLER = Endpoint("UDP", "127.0.0.1", 5060)
PEER = Endpoint("UDP", "127.0.0.1", 5091)
ESPOO = CivicAddress(
    country="FI",
    a1="Uusimaa",
    a3="Espoo",
    rd="Metsänneidonkuja",
    hno="12",
    pc="02130",
    pcn="Espoo",
    nam="Setera Communications Oy",
    lang="fi",
)
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def pidf(location: Location) -> bytes:
    return build_pidf(location, entity="sip:alice@voipgw.demo", tuple_id="t1", timestamp=NOW)


def emergency_invite(location: Location | None, *, cls: str = "office") -> Request:
    headers = Headers(
        [
            ("From", "<sip:alice@127.0.0.1>;tag=f1"),
            ("To", "<sip:112@127.0.0.1:5091>"),
            ("Call-ID", "c1"),
            ("CSeq", "1 INVITE"),
            ("Contact", "<sip:gw@127.0.0.1:5060>"),
            ("P-Asserted-Identity", '"Alice" <tel:+358401000001>'),
            ("Resource-Priority", "esnet.1"),
            ("X-Voipgw-Class", cls),
        ]
    )
    body = SDP_OFFER
    if location is not None:
        content_type, body = build_multipart(SDP_OFFER, pidf(location), "b0und", "loc1@gw")
        for name, value in geolocation_headers("loc1@gw"):
            headers.add(name, value)
        headers.add("Content-Type", content_type)
    else:
        headers.add("Content-Type", "application/sdp")
    return Request(method="INVITE", uri="sip:112@127.0.0.1:5091", headers=headers, body=body)


# ---------------------------------------------------------------------- report


def test_office_line_shows_callback_priority_geolocation_and_the_civic_address() -> None:
    line = emergency_line(
        "kerava (Hätäkeskus Kerava)", emergency_invite(Location(address=ESPOO, verified=True))
    )
    assert line == (
        "centre kerava (Hätäkeskus Kerava): 112 call from sip:alice@127.0.0.1"
        ' | callback "Alice" <tel:+358401000001> | Resource-Priority esnet.1'
        " | Geolocation <cid:loc1@gw> | class office"
        " | location: Metsänneidonkuja 12, 02130 Espoo, Uusimaa, FI (Setera Communications Oy)"
    )


def test_nomadic_location_is_shown_as_not_verified() -> None:
    request = emergency_invite(
        Location(address=None, verified=False, note="Nomadic."), cls="nomadic"
    )
    line = emergency_line("national (x)", request)
    assert "| class nomadic |" in line
    assert "location: not verified (Location not verified. Nomadic.)" in line


def test_a_call_without_pidf_says_none_and_what_the_body_was() -> None:
    line = emergency_line("national (x)", emergency_invite(None))
    assert "Geolocation (none)" in line
    assert line.endswith("location: none (no PIDF-LO in the body: application/sdp)")


def test_describe_location_of_bad_or_empty_documents() -> None:
    assert describe_location(None) == "none (no PIDF-LO in the body: no body)"
    assert describe_location(b"<presence").startswith("none (PIDF-LO is not XML")
    empty = pidf(Location(address=None, verified=True))
    assert describe_location(empty) == "none (no civic address)"


def test_body_parts_of_multipart_and_single_bodies() -> None:
    content_type, body = build_multipart(SDP_OFFER, b"<x/>", "b0und", "loc1@gw")
    parts = body_parts(content_type, body)
    assert parts["application/sdp"] == SDP_OFFER
    assert parts["application/pidf+xml"] == b"<x/>"
    assert body_parts("application/sdp", SDP_OFFER) == {"application/sdp": SDP_OFFER}
    assert body_parts("", b"") == {}


def test_lines_do_not_pass_control_characters_or_huge_values() -> None:
    request = emergency_invite(None)
    request.headers.set("X-Voipgw-Class", "\x1b[31mred" + "x" * 500)
    request.headers.set("X-Voipgw-Recording-Notice", "played")
    line = pbx_line("pbx", request)
    assert "\x1b" not in line
    assert "?[31mred" in line and "..." in line
    assert line.endswith("| recording notice played")


# ---------------------------------------------------------------------- agent


class Pair:
    """A caller's transaction layer and the agent's, linked in memory."""

    def __init__(self) -> None:
        self.now = 0.0
        self.caller = TransactionLayer(local=[CALLER], new_token=counter_tokens("c"))
        self.layer = TransactionLayer(local=[PEER], new_token=counter_tokens("p"))
        self.agent = AnsweringAgent(
            self.layer, "<sip:kerava@127.0.0.1:5091>", counter_tokens("tag")
        )
        self.caller_events: list[SipEvent] = []
        self.agent_events: list[CallOffered | CallEnded] = []

    def run(self) -> None:
        """Moves messages both ways until both sides are quiet."""
        while True:
            moved = False
            for data, destination in self.caller.datagrams_to_send():
                assert destination == PEER
                self.layer.receive_message(data, CALLER, self.now)
                moved = True
            while (event := self.layer.next_event()) is not None:
                self.agent_events += self.agent.receive(event, self.now)
            for data, destination in self.layer.datagrams_to_send():
                assert destination == CALLER, destination
                self.caller.receive_message(data, PEER, self.now)
                moved = True
            while (caller_event := self.caller.next_event()) is not None:
                self.caller_events.append(caller_event)
            if not moved:
                return

    def invite(self) -> Request:
        request = emergency_invite(None)
        request.headers.remove("Via")
        self.caller.send_request(request, PEER, self.now)
        self.run()
        return request

    def responses(self) -> list[Response]:
        return [e.response for e in self.caller_events if isinstance(e, ResponseReceived)]

    def statuses(self) -> list[int]:
        return [r.status for r in self.responses()]


def test_invite_rings_then_answers_with_our_sdp_and_a_bye_ends_it() -> None:
    pair = Pair()
    invite = pair.invite()
    [offered] = pair.agent_events
    assert isinstance(offered, CallOffered)
    assert offered.call_id == "c1" and offered.source == CALLER
    assert pair.statuses() == [100, 180]
    ringing = pair.responses()[1]
    assert ";tag=tag1" in (ringing.headers.get("To") or "")
    assert ringing.headers.get("Contact") == "<sip:kerava@127.0.0.1:5091>"

    pair.agent.answer("c1", b"v=0\r\n", pair.now)
    pair.run()
    ok = pair.responses()[-1]
    assert ok.status == 200 and ok.body == b"v=0\r\n"
    assert ok.headers.get("Content-Type") == "application/sdp"

    dialog = Dialog.as_uac(invite, ok)
    ack = dialog.create_request("ACK", cseq=1)
    pair.caller.send_ack(ack, PEER)
    bye = dialog.create_request("BYE")
    pair.caller.send_request(bye, PEER, pair.now)
    pair.run()
    assert pair.statuses()[-1] == 200
    assert pair.agent_events[-1] == CallEnded(call_id="c1", reason="caller hung up")
    pair.agent.forget("c1")
    assert pair.agent.calls == {}


def test_cancel_while_ringing_ends_with_487() -> None:
    pair = Pair()
    invite = pair.invite()
    [key] = [k for k in pair.caller.transactions if k.method == "INVITE"]
    pair.caller.send_cancel(key, build_cancel(invite), pair.now)
    pair.run()
    assert 487 in pair.statuses()
    assert pair.agent_events[-1] == CallEnded(call_id="c1", reason="cancelled")
    pair.agent.answer("c1", b"v=0\r\n", pair.now)  # too late: nothing is sent
    pair.run()
    assert 200 not in [
        r.status for r in pair.responses() if "INVITE" in (r.headers.get("CSeq") or "")
    ]


def test_hang_up_sends_bye_to_the_callers_contact() -> None:
    pair = Pair()
    pair.invite()
    pair.agent.answer("c1", b"v=0\r\n", pair.now)
    pair.run()
    ended = pair.agent.hang_up("c1", pair.now)
    assert ended == CallEnded(call_id="c1", reason="we hung up")
    [(data, destination)] = pair.layer.datagrams_to_send()
    assert destination == Endpoint("UDP", "127.0.0.1", 5060)
    assert data.startswith(b"BYE sip:gw@127.0.0.1:5060 SIP/2.0\r\n")
    assert pair.agent.hang_up("c1", pair.now) is None  # once


def test_unknown_bye_gets_481_and_options_200() -> None:
    pair = Pair()
    for method, status in (("BYE", 481), ("OPTIONS", 200), ("MESSAGE", 405)):
        headers = Headers(
            [
                ("From", "<sip:x@127.0.0.1>;tag=a"),
                ("To", "<sip:kerava@127.0.0.1:5091>;tag=zz"),
                ("Call-ID", f"other-{method}"),
                ("CSeq", f"1 {method}"),
            ]
        )
        pair.caller.send_request(
            Request(method=method, uri="sip:kerava@127.0.0.1:5091", headers=headers), PEER, pair.now
        )
        pair.run()
        assert pair.statuses()[-1] == status, method
    assert pair.agent_events == []


def test_reject_ends_a_ringing_call() -> None:
    pair = Pair()
    pair.invite()
    assert pair.agent.reject("c1", 488, pair.now) == CallEnded(call_id="c1", reason="rejected")
    pair.run()
    assert pair.statuses()[-1] == 488


# ---------------------------------------------------------------------- tone


def test_tone_beeps_at_its_level_and_length() -> None:
    tone = Tone(frequency=440.0, seconds=1.2, on=0.4, off=0.2)
    pcm = tone_pcm(tone)
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    assert len(samples) == round(1.2 * SAMPLE_RATE)
    beep = samples[: int(0.4 * SAMPLE_RATE)]
    pause = samples[int(0.41 * SAMPLE_RATE) : int(0.59 * SAMPLE_RATE)]
    assert max(beep) > 0.29 * 32767
    assert not any(pause)
    # 440 Hz: about 2 * 440 zero crossings per second of beep.
    crossings = sum(1 for a, b in itertools.pairwise(beep) if (a < 0) != (b < 0))
    assert math.isclose(crossings / 0.4, 880, rel_tol=0.02)
    prompt = encoded_tone(tone, "PCMU")
    assert len(prompt.frames) == 60 and all(len(f) == 160 for f in prompt.frames)
    assert encoded_tone(tone, "PCMU") is prompt


# ---------------------------------------------------------------------- over UDP


class Caller(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.arrived = asyncio.Event()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.received.append(data)
        self.arrived.set()


@pytest.mark.asyncio
async def test_peer_answers_plays_the_tone_and_hangs_up() -> None:
    """A real socket each: INVITE in, 180 and 200 with SDP out, RTP at the offer's
    port, then the peer's BYE when the tone ends."""
    loop = asyncio.get_running_loop()
    host = "127.0.0.1"
    lines: list[str] = []
    peer = DemoPeer(
        "pbx",
        "pbx",
        host,
        free_port(host),
        Tone(frequency=440.0, seconds=0.3),
        lambda c: "offered",
        lines.append,
    )
    await peer.start()
    sip_transport, sip = await loop.create_datagram_endpoint(Caller, local_addr=(host, 0))
    rtp_transport, rtp = await loop.create_datagram_endpoint(Caller, local_addr=(host, 0))
    try:
        sip_port = sip_transport.get_extra_info("sockname")[1]
        rtp_port = rtp_transport.get_extra_info("sockname")[1]
        sdp = SDP_OFFER.replace(b"127.0.0.2", host.encode()).replace(
            b"40000", str(rtp_port).encode()
        )
        invite = (
            f"INVITE sip:+358201234567@{host}:{peer.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{sip_port};branch=z9hG4bK-demo1\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:gw@{host}>;tag=g1\r\nTo: <sip:+358201234567@{host}>\r\n"
            "Call-ID: udp-call-1\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:gw@{host}:{sip_port}>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n"
        ).encode() + sdp
        sip_transport.sendto(invite, (host, peer.port))
        while not any(m.startswith(b"BYE ") for m in sip.received):
            sip.arrived.clear()
            await asyncio.wait_for(sip.arrived.wait(), 5)
        starts = [m.split(b"\r\n", 1)[0] for m in sip.received]
        assert starts[:3] == [b"SIP/2.0 100 Trying", b"SIP/2.0 180 Ringing", b"SIP/2.0 200 OK"], (
            starts
        )
        assert b"m=audio " in sip.received[2] and b"PCMU/8000" in sip.received[2]
        for _ in range(100):  # the last frames may be read after the BYE
            if len(rtp.received) >= 15:
                break
            await asyncio.sleep(0.01)
        assert len(rtp.received) == 15  # 0.3 s of 20 ms frames
        assert lines[0] == "offered"
        assert lines[-1] == "pbx: call udp-call-1 ended (we hung up)"
    finally:
        sip_transport.close()
        rtp_transport.close()
        await peer.close()


@pytest.mark.asyncio
async def test_peer_takes_a_large_invite_over_tcp_and_answers_on_the_connection() -> None:
    """RFC 3261 18.1.1: the gateway sends an emergency INVITE larger than 1300 bytes
    over TCP; the peer answers on that connection (18.2.2) and sends its BYE there."""
    host = "127.0.0.1"
    peer = DemoPeer(
        "centre kerava",
        "kerava",
        host,
        free_port(host),
        Tone(frequency=660.0, seconds=0.2),
        lambda c: "offered",
        lambda line: None,
    )
    await peer.start()
    reader, writer = await asyncio.open_connection(host, peer.port)
    try:
        local_port = writer.get_extra_info("sockname")[1]
        request = emergency_invite(Location(address=ESPOO, verified=True))
        request.headers.prepend("Via", f"SIP/2.0/TCP {host}:{local_port};branch=z9hG4bK-tcp1")
        request.headers.set("Contact", f"<sip:gw@{host}:{local_port};transport=tcp>")
        data = request.serialize()
        assert len(data) > 1300
        writer.write(data)
        framer = StreamFramer(initiator=True)
        starts: list[bytes] = []
        while not any(s.startswith(b"BYE ") for s in starts):
            framer.feed(await asyncio.wait_for(reader.read(65536), 5))
            while (message := framer.next_message()) is not None:
                starts.append(message.split(b"\r\n", 1)[0])
        assert starts[:3] == [b"SIP/2.0 100 Trying", b"SIP/2.0 180 Ringing", b"SIP/2.0 200 OK"]
        assert starts[-1] == f"BYE sip:gw@{host}:{local_port};transport=tcp SIP/2.0".encode()
    finally:
        writer.close()
        await peer.close()
