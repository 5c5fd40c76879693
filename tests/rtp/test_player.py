"""AnnouncementPlayer: content, RTP fields, pacing, latching, cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.rtp.codecs import FRAME_DURATION, EncodedPrompt, decode_g711
from gateway.rtp.endpoint import RtpEndpoint
from gateway.rtp.packet import RtpPacket
from gateway.rtp.player import AnnouncementPlayer
from gateway.rtp.ports import PortAllocator
from gateway.rtp.session import MediaSession

from .conftest import CACHE, PROMPTS, Sink, no_other_tasks, normalised_xcorr, open_sink, s16

NOTICE = PROMPTS / "recording-notice.en.wav"


def short_prompt(frames: int, encoding: str = "PCMU") -> EncodedPrompt:
    full = CACHE.get(NOTICE, encoding)
    return EncodedPrompt(path=full.path, encoding_name=encoding, frames=full.frames[:frames])


@pytest.mark.asyncio
@pytest.mark.parametrize(("encoding", "pt"), [("PCMU", 0), ("PCMA", 8)])
async def test_prompt_arrives_intact_and_paced(
    allocator: PortAllocator, sinks: list[Sink], encoding: str, pt: int
) -> None:
    sink = await open_sink()
    sinks.append(sink)
    prompt = CACHE.get(NOTICE, encoding)
    async with MediaSession(allocator, call_id="t") as session:
        leg = await session.open_leg("a", "127.0.0.1", expected=sink.address)
        result = await session.play("a", prompt, pt)
        await sink.wait_for(len(prompt.frames))
        player = session.player
        assert player is not None

    assert result.completed
    assert result.frames_sent == result.frames_total == len(prompt.frames)
    packets = [RtpPacket.parse(data) for _, data, _ in sink.received]
    assert {src for _, _, src in sink.received} == {("127.0.0.1", leg.port)}

    # RTP fields: one SSRC, marker only on the first, seq +1 and ts +160 (mod 2**16/2**32).
    assert {p.ssrc for p in packets} == {player.ssrc}
    assert {p.payload_type for p in packets} == {pt}
    assert [p.marker for p in packets] == [1] + [0] * (len(packets) - 1)
    first = packets[0]
    assert first.sequence_number == player.first_sequence
    for n, p in enumerate(packets):
        assert p.sequence_number == (first.sequence_number + n) % 65536
        assert p.timestamp == (first.timestamp + 160 * n) % 2**32
    assert result.stream.next_sequence == (packets[-1].sequence_number + 1) % 65536
    assert result.stream.next_timestamp == (packets[-1].timestamp + 160) % 2**32

    # Content: decode with aiortc's G.711 decoder and compare with the WAV.
    decoded = s16(b"".join(decode_g711(p.payload, encoding) for p in packets))
    original = s16(CACHE.pcm(NOTICE))
    assert len(decoded) == len(packets) * 160 >= len(original)
    assert normalised_xcorr(original, decoded) >= 0.9
    # Sanity of the measure: the same audio shifted by 50 ms must not pass.
    assert normalised_xcorr(original, decoded[400:]) < 0.9

    # Pacing, from the recorded schedule: frame n due at start + n*20 ms, never sent
    # early, and the mean interval over the whole prompt is 20 ms (no drift).
    assert player.start is not None
    for n, sent in enumerate(player.send_times):
        assert sent - player.scheduled_time(n) == pytest.approx(player.lateness[n])
        assert player.lateness[n] >= -0.001
    span = player.send_times[-1] - player.send_times[0]
    assert span / (len(packets) - 1) == pytest.approx(FRAME_DURATION, abs=0.0005)
    arrivals = [t for t, _, _ in sink.received]
    assert (arrivals[-1] - arrivals[0]) / (len(arrivals) - 1) == pytest.approx(
        FRAME_DURATION, abs=0.001
    )


@pytest.mark.asyncio
async def test_stall_does_not_cause_drift(allocator: PortAllocator, sinks: list[Sink]) -> None:
    """A 110 ms loop stall delays a few frames; later frames are back on the grid."""
    sink = await open_sink()
    sinks.append(sink)
    loop = asyncio.get_running_loop()
    async with MediaSession(allocator) as session:
        await session.open_leg("a", "127.0.0.1", expected=sink.address)
        loop.call_later(0.1, time.sleep, 0.11)  # blocks the loop on purpose
        result = await session.play("a", short_prompt(30), 0)
        player = session.player
        assert player is not None
    assert result.completed
    late = [x for x in player.lateness if x > 0.02]
    assert late, "the stall should have made some frames late"
    # Frames due after the stall ended are on time again: schedule is absolute.
    assert max(player.lateness[15:]) < 0.015
    packets = [RtpPacket.parse(d) for _, d, _ in sink.received]
    assert [p.timestamp - packets[0].timestamp for p in packets] == [160 * n for n in range(30)]


@pytest.mark.asyncio
async def test_sequence_and_timestamp_wrap(sinks: list[Sink]) -> None:
    sink = await open_sink()
    sinks.append(sink)
    loop = asyncio.get_running_loop()
    transport, endpoint = await loop.create_datagram_endpoint(
        lambda: RtpEndpoint(expected=sink.address),
        local_addr=("127.0.0.1", 0),
    )
    try:
        player = AnnouncementPlayer(
            endpoint, short_prompt(4), 0, ssrc=7, sequence=65534, timestamp=2**32 - 200
        )
        result = await player.play()
        await sink.wait_for(4)
    finally:
        transport.close()
    packets = [RtpPacket.parse(d) for _, d, _ in sink.received]
    assert [p.sequence_number for p in packets] == [65534, 65535, 0, 1]
    assert [p.timestamp for p in packets] == [2**32 - 200, 2**32 - 40, 120, 280]
    assert result.stream.next_sequence == 2
    assert result.stream.next_timestamp == 440


@pytest.mark.asyncio
async def test_latches_to_where_caller_rtp_comes_from(
    allocator: PortAllocator, sinks: list[Sink]
) -> None:
    """SDP says one port (behind NAT); the caller's RTP comes from another: follow it."""
    sdp_sink = await open_sink()
    nat_sink = await open_sink()
    sinks.extend([sdp_sink, nat_sink])
    async with MediaSession(allocator) as session:
        leg = await session.open_leg("a", "127.0.0.1", expected=sdp_sink.address)
        play = asyncio.create_task(session.play("a", short_prompt(20), 0))
        await sdp_sink.wait_for(3)
        caller_rtp = RtpPacket(payload_type=0, sequence_number=1, ssrc=99, payload=b"\xff" * 160)
        nat_sink.send(caller_rtp.serialize(), ("127.0.0.1", leg.port))
        result = await play
        await nat_sink.wait_for(1)
    assert leg.rtp.latched == nat_sink.address
    assert leg.rtcp.expected == ("127.0.0.1", nat_sink.address[1] + 1)
    assert result.completed
    before, after = len(sdp_sink.received), len(nat_sink.received)
    assert before >= 3
    assert after >= 1
    assert before + after == 20
    # Packets continued the same stream after the switch.
    seqs = [RtpPacket.parse(d).sequence_number for _, d, _ in sdp_sink.received + nat_sink.received]
    assert seqs == [(seqs[0] + n) % 65536 for n in range(20)]


@pytest.mark.asyncio
async def test_cancel_stops_sending_and_close_frees_everything(sinks: list[Sink]) -> None:
    allocator = PortAllocator(41200, 41209)
    sink = await open_sink()
    sinks.append(sink)
    session = MediaSession(allocator, call_id="cancel-me")
    await session.open_leg("a", "127.0.0.1", expected=sink.address)
    await session.open_leg("b", "127.0.0.1")
    assert len(allocator.in_use) == 2
    task = asyncio.create_task(session.play("a", CACHE.get(NOTICE, "PCMU"), 0))
    await sink.wait_for(5)
    task.cancel()  # CANCEL from the caller during the prompt
    with pytest.raises(asyncio.CancelledError):
        await task
    sent = len(sink.received)
    await asyncio.sleep(0.1)
    assert len(sink.received) <= sent + 1  # at most one already in flight
    assert session.player is not None
    assert not session.player.result(False).completed
    await session.close()
    await session.close()  # idempotent
    assert allocator.leaked() == {}
    assert no_other_tasks() == set()
    assert len(asyncio.get_running_loop()._scheduled) == 0  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_stop_ends_play_early(allocator: PortAllocator, sinks: list[Sink]) -> None:
    sink = await open_sink()
    sinks.append(sink)
    async with MediaSession(allocator) as session:
        await session.open_leg("a", "127.0.0.1", expected=sink.address)
        task = asyncio.create_task(session.play("a", short_prompt(50), 0))
        await sink.wait_for(3)
        assert session.player is not None
        session.player.stop()
        result = await task
    assert not result.completed
    assert 3 <= result.frames_sent < 50


@pytest.mark.asyncio
async def test_no_destination_counts_unsent(allocator: PortAllocator) -> None:
    async with MediaSession(allocator) as session:
        await session.open_leg("a", "127.0.0.1")
        result = await session.play("a", short_prompt(3), 0)
    assert result.completed
    assert (result.frames_sent, result.frames_unsent) == (0, 3)


@pytest.mark.asyncio
async def test_play_twice_is_an_error(allocator: PortAllocator) -> None:
    async with MediaSession(allocator) as session:
        leg = await session.open_leg("a", "127.0.0.1")
        player = AnnouncementPlayer(leg.rtp, short_prompt(1), 0)
        await player.play()
        with pytest.raises(RuntimeError, match="only once"):
            await player.play()
