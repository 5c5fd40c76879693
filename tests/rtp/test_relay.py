"""RtpRelay: two fake phones on loopback talk through the gateway."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from aiortc.rtp import RtcpPacket, RtcpReceiverInfo, RtcpRrPacket, RtcpSenderInfo, RtcpSrPacket

from gateway.rtp.packet import RtpPacket, TelephoneEvent
from gateway.rtp.ports import PortAllocator
from gateway.rtp.session import MediaSession

from .conftest import Sink, no_other_tasks, open_pair, open_sink
from .test_player import short_prompt


def rtp(seq: int, ts: int, ssrc: int, pt: int = 0, payload: bytes = b"\xd5" * 160) -> bytes:
    return RtpPacket(
        payload_type=pt, sequence_number=seq, timestamp=ts, ssrc=ssrc, payload=payload
    ).serialize()


async def phones(host: str = "127.0.0.1") -> tuple[Sink, Sink, Sink, Sink]:
    """Caller RTP/RTCP and staff RTP/RTCP sockets."""
    caller, caller_rtcp = await open_pair(host)
    staff, staff_rtcp = await open_pair(host)
    return caller, caller_rtcp, staff, staff_rtcp


@pytest.mark.asyncio
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_prompt_then_relay_is_one_continuous_stream(
    allocator: PortAllocator, sinks: list[Sink], host: str
) -> None:
    caller, caller_rtcp, staff, staff_rtcp = await phones(host)
    sinks.extend([caller, caller_rtcp, staff, staff_rtcp])
    async with MediaSession(allocator, call_id="relay") as session:
        a = await session.open_leg("a", host, expected=caller.address)
        b = await session.open_leg("b", host, expected=staff.address)
        result = await session.play("a", short_prompt(10), 0)
        await caller.wait_for(10)
        prompt_packets = [RtpPacket.parse(d) for _, d, _ in caller.received]
        relay = session.start_relay(continue_to_a=result.stream)

        await asyncio.sleep(0.05)  # staff answers a little after the prompt ended
        staff_ssrc, staff_seq, staff_ts = 0xABCDEF01, 30000, 123456
        for n in range(5):
            staff.send(rtp(staff_seq + n, staff_ts + 160 * n, staff_ssrc), (host, b.port))
        # RFC 4733 digit "5": three packets sharing the event's start timestamp.
        for n, end in enumerate([False, False, True]):
            event = bytes(TelephoneEvent(event=5, end=end, volume=10, duration=160 * (n + 1)))
            staff.send(
                rtp(staff_seq + 5 + n, staff_ts + 800, staff_ssrc, pt=101, payload=event),
                (host, b.port),
            )
        caller.send(rtp(7, 1000, 0x1111), (host, a.port))
        await caller.wait_for(10 + 8)
        await staff.wait_for(1)

        # RTCP both ways: staff SR about its stream; caller RR about "our" SSRC.
        sr = RtcpSrPacket(
            ssrc=staff_ssrc,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=1, rtp_timestamp=staff_ts, packet_count=5, octet_count=800
            ),
        )
        staff_rtcp.send(bytes(sr), (host, b.port + 1))
        rr = RtcpRrPacket(
            ssrc=0x1111,
            reports=[
                RtcpReceiverInfo(
                    ssrc=result.stream.ssrc,
                    fraction_lost=0,
                    packets_lost=0,
                    highest_sequence=result.stream.next_sequence + 4,
                    jitter=0,
                    lsr=0,
                    dlsr=0,
                )
            ],
        )
        caller_rtcp.send(bytes(rr), (host, a.port + 1))
        await caller_rtcp.wait_for(1)
        await staff_rtcp.wait_for(1)

    relayed = [RtpPacket.parse(d) for _, d, _ in caller.received[10:]]
    last = prompt_packets[-1]
    # Same SSRC as the prompt; sequence continues from the prompt's last + 1.
    assert {p.ssrc for p in relayed} == {last.ssrc}
    assert [p.sequence_number for p in relayed] == [
        (last.sequence_number + 1 + n) % 65536 for n in range(8)
    ]
    assert [p.marker for p in relayed] == [1] + [0] * 7
    # Timestamp: prompt's next + time elapsed since that frame was due (staff spoke 50 ms
    # after the last frame, i.e. >= 30 ms = 240 units after the next one was due), then
    # the source's spacing.
    gap = (relayed[0].timestamp - (last.timestamp + 160)) % 2**32
    assert 240 <= gap < 8000
    assert [(p.timestamp - relayed[0].timestamp) % 2**32 for p in relayed] == [
        0,
        160,
        320,
        480,
        640,
        800,
        800,
        800,
    ]
    # telephone-event passes with payload untouched.
    events = [TelephoneEvent.parse(p.payload) for p in relayed[5:]]
    assert [p.payload_type for p in relayed[5:]] == [101] * 3
    assert [(e.event, e.end, e.duration) for e in events] == [
        (5, False, 160),
        (5, False, 320),
        (5, True, 480),
    ]
    # Caller to staff is forwarded unchanged, from the gateway's B socket.
    assert staff.received[0][1] == rtp(7, 1000, 0x1111)
    assert staff.received[0][2][1] == b.port
    assert caller.received[-1][2][1] == a.port
    # RTCP: SR sender mapped to our SSRC with the timestamp offset; RR mapped back.
    (sr_out,) = RtcpPacket.parse(caller_rtcp.received[0][1])
    assert isinstance(sr_out, RtcpSrPacket)
    assert sr_out.ssrc == last.ssrc
    assert sr_out.sender_info.rtp_timestamp == relayed[0].timestamp
    (rr_out,) = RtcpPacket.parse(staff_rtcp.received[0][1])
    assert isinstance(rr_out, RtcpRrPacket)
    assert rr_out.reports[0].ssrc == staff_ssrc
    assert rr_out.reports[0].highest_sequence & 0xFFFF == staff_seq + 4
    # Counters.
    assert (relay.b_to_a.packets, relay.a_to_b.packets) == (8, 1)
    assert relay.b_to_a.bytes == sum(len(d) for _, d, _ in caller.received[10:])
    assert (relay.b_to_a.rtcp_packets, relay.a_to_b.rtcp_packets) == (1, 1)
    assert relay.b_to_a.drops == relay.a_to_b.drops == 0
    assert no_other_tasks() == set()


@pytest.mark.asyncio
async def test_new_staff_ssrc_continues_sequence(
    allocator: PortAllocator, sinks: list[Sink]
) -> None:
    caller, caller_rtcp, staff, staff_rtcp = await phones()
    sinks.extend([caller, caller_rtcp, staff, staff_rtcp])
    async with MediaSession(allocator) as session:
        await session.open_leg("a", "127.0.0.1", expected=caller.address)
        b = await session.open_leg("b", "127.0.0.1", expected=staff.address)
        result = await session.play("a", short_prompt(2), 8)
        session.start_relay(continue_to_a=result.stream)
        for n in range(3):
            staff.send(rtp(100 + n, 5000 + 160 * n, 1, pt=8), ("127.0.0.1", b.port))
        await caller.wait_for(5)
        # Transferred to another staff phone: new SSRC, unrelated seq/ts.
        for n in range(3):
            staff.send(rtp(9 + n, 77 + 160 * n, 2, pt=8), ("127.0.0.1", b.port))
        await caller.wait_for(8)
    packets = [RtpPacket.parse(d) for _, d, _ in caller.received]
    first = packets[0].sequence_number
    assert [p.sequence_number for p in packets] == [(first + n) % 65536 for n in range(8)]
    assert {p.ssrc for p in packets} == {result.stream.ssrc}
    assert [p.marker for p in packets] == [1, 0, 1, 0, 0, 1, 0, 0]
    assert all((b.timestamp - a.timestamp) % 2**32 < 8000 for a, b in itertools.pairwise(packets))


@pytest.mark.asyncio
async def test_latched_source_only_other_ips_dropped(
    allocator: PortAllocator, sinks: list[Sink]
) -> None:
    caller, caller_rtcp, staff, staff_rtcp = await phones()
    sinks.extend([caller_rtcp, staff_rtcp])
    intruder = await open_sink("127.0.0.2")  # another loopback IP
    rebound = await open_sink()  # same IP as caller, new port (NAT rebinding)
    sinks.extend([caller, staff, intruder, rebound])
    async with MediaSession(allocator) as session:
        a = await session.open_leg("a", "127.0.0.1", expected=caller.address)
        await session.open_leg("b", "127.0.0.1", expected=staff.address)
        relay = session.start_relay()
        caller.send(rtp(1, 0, 5), ("127.0.0.1", a.port))
        await staff.wait_for(1)
        assert a.rtp.latched == caller.address
        intruder.send(rtp(2, 160, 5), ("127.0.0.1", a.port))
        rebound.send(rtp(3, 320, 5), ("127.0.0.1", a.port))
        await staff.wait_for(2)
        await asyncio.sleep(0.02)
        assert a.rtp.dropped_foreign == 1
        assert a.rtp.latched == rebound.address
        assert [RtpPacket.parse(d).sequence_number for _, d, _ in staff.received] == [1, 3]
        assert relay.a_to_b.packets == 2
        # Garbage from the latched source is counted as a drop, not relayed.
        rebound.send(b"\x00" * 20, ("127.0.0.1", a.port))
        await asyncio.sleep(0.02)
        assert relay.a_to_b.drops == 1


@pytest.mark.asyncio
async def test_allowed_ips_restrict_first_latch(
    allocator: PortAllocator, sinks: list[Sink]
) -> None:
    intruder = await open_sink("127.0.0.2")
    sinks.append(intruder)
    async with MediaSession(allocator) as session:
        a = await session.open_leg("a", "127.0.0.1", allowed_ips=frozenset({"127.0.0.1"}))
        intruder.send(rtp(1, 0, 5), ("127.0.0.1", a.port))
        intruder.send(b"junk", ("127.0.0.1", a.port))
        await asyncio.sleep(0.05)
        assert a.rtp.latched is None
        assert a.rtp.dropped_foreign == 2


@pytest.mark.asyncio
async def test_relay_without_destination_counts_drops(
    allocator: PortAllocator, sinks: list[Sink]
) -> None:
    caller = await open_sink()
    sinks.append(caller)
    async with MediaSession(allocator) as session:
        a = await session.open_leg("a", "127.0.0.1")
        await session.open_leg("b", "127.0.0.1")  # staff address not known yet
        relay = session.start_relay()
        caller.send(rtp(1, 0, 5), ("127.0.0.1", a.port))
        caller.send(bytes(RtcpRrPacket(ssrc=5)), ("127.0.0.1", a.port + 1))
        await asyncio.sleep(0.05)
        assert relay.a_to_b.drops == 2
        relay.stop()
        assert a.rtp.on_datagram is None


@pytest.mark.asyncio
async def test_last_rtp_of_each_leg_is_noted_for_the_dead_media_check(
    allocator: PortAllocator, sinks: list[Sink]
) -> None:
    caller, caller_rtcp, staff, staff_rtcp = await phones()
    sinks.extend([caller, caller_rtcp, staff, staff_rtcp])
    async with MediaSession(allocator) as session:
        a = await session.open_leg("a", "127.0.0.1", expected=caller.address)
        b = await session.open_leg("b", "127.0.0.1", expected=staff.address)
        relay = session.start_relay()
        started = dict(relay.last_rtp)
        assert started["a"] == started["b"]  # the start counts as the last packet
        await asyncio.sleep(0.05)
        caller.send(rtp(1, 0, 5), ("127.0.0.1", a.port))
        await staff.wait_for(1)
        assert relay.last_rtp["a"] > started["a"]
        assert relay.last_rtp["b"] == started["b"]  # staff has said nothing yet
        staff.send(rtp(1, 0, 6), ("127.0.0.1", b.port))
        await caller.wait_for(1)
        assert relay.last_rtp["b"] > started["b"]
        # RTCP is not media: it does not count.
        before = dict(relay.last_rtp)
        caller_rtcp.send(b"\x80\xc8" + b"\x00" * 26, ("127.0.0.1", a.port + 1))
        await asyncio.sleep(0.02)
        assert relay.last_rtp == before
