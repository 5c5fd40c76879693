"""Paced G.711 announcement playback as RTP early media.

Theory of operation: the prompt is a tuple of 160-byte payloads (see
:mod:`gateway.rtp.codecs`). Frame n is due at ``start + n * 0.020`` on the loop
clock (aiortc ``AudioStreamTrack`` pacing); each send schedules the next one with
``loop.call_at`` at its absolute due time, so late wake-ups never accumulate into
drift (a ``sleep(0.02)`` loop would add every wake-up delay to all later frames).
One timer callback per frame and no coroutine per frame keeps the cost per packet
small enough for hundreds of concurrent prompts per core.

When the loop falls behind, late frames are sent as soon as possible rather than
skipped: the recording notice is a legal statement and must be heard whole; the
RTP timestamps stay on the 20 ms grid so the phone's jitter buffer restores timing.

RTP fields (RFC 3550 section 5.1): random initial sequence number, timestamp and
SSRC; marker bit on the first packet (RFC 3551 section 4.1: first packet of a
talkspurt); sequence and timestamp wrap modulo 2**16 / 2**32 (aiortc ``uint16_add``).

Packets leave from the leg's own socket, towards the endpoint's latched address once
the caller's RTP has arrived (symmetric RTP, see :mod:`gateway.rtp.endpoint`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from gateway.rtp.codecs import FRAME_DURATION, SAMPLES_PER_FRAME, EncodedPrompt
from gateway.rtp.endpoint import RtpEndpoint
from gateway.rtp.packet import RtpPacket, random16, random32, uint16_add, uint32_add


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpStreamState:
    """Where an outgoing RTP stream stands, so another source can continue it.

    Attributes:
        ssrc: the stream's SSRC.
        payload_type: payload type of the audio sent.
        next_sequence: sequence number of the next packet (last + 1, mod 2**16).
        next_timestamp: RTP timestamp of the next frame (last + 160, mod 2**32).
        next_time: loop time at which that frame would have been due, in seconds.
        clock_rate: RTP clock rate, in Hz.
    """

    ssrc: int
    payload_type: int
    next_sequence: int
    next_timestamp: int
    next_time: float
    clock_rate: int = 8000


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaybackResult:
    """The outcome of one playback.

    Attributes:
        completed: every frame was sent (False when stopped or cancelled).
        frames_total: frames in the prompt.
        frames_sent: frames handed to the socket with a destination.
        frames_unsent: frames due while there was no destination (no SDP address
            and nothing latched yet).
        stream: the stream state after the last frame, for the relay to continue.
    """

    completed: bool
    frames_total: int
    frames_sent: int
    frames_unsent: int
    stream: RtpStreamState


class AnnouncementPlayer:
    """Plays one encoded prompt on one leg.

    Args:
        endpoint: the leg's RTP endpoint (socket + latching).
        prompt: the encoded prompt; its codec must match ``payload_type``.
        payload_type: negotiated RTP payload type (0 for PCMU, 8 for PCMA, or dynamic).
        ssrc: SSRC to use; random when None.
        sequence: first sequence number; random when None.
        timestamp: first timestamp; random when None.
        on_lateness: called with each frame's lateness (send time minus due time, in
            seconds), e.g. to feed a ``voipgw_rtp_send_lateness_seconds`` histogram.
    """

    def __init__(
        self,
        endpoint: RtpEndpoint,
        prompt: EncodedPrompt,
        payload_type: int,
        *,
        ssrc: int | None = None,
        sequence: int | None = None,
        timestamp: int | None = None,
        on_lateness: Callable[[float], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.prompt = prompt
        self.payload_type = payload_type
        self.ssrc = random32() if ssrc is None else ssrc
        self.first_sequence = random16() if sequence is None else sequence
        self.first_timestamp = random32() if timestamp is None else timestamp
        self.on_lateness = on_lateness
        #: Loop time of frame 0, set when playback starts.
        self.start: float | None = None
        #: Actual loop time of each send, in frame order.
        self.send_times: list[float] = []
        #: Lateness of each frame (send time minus due time), in seconds.
        self.lateness: list[float] = []
        self._frames_unsent = 0
        self._handle: asyncio.TimerHandle | None = None
        self._done: asyncio.Future[bool] | None = None

    def scheduled_time(self, n: int) -> float:
        """The due time of frame n on the loop clock, in seconds."""
        assert self.start is not None
        return self.start + n * FRAME_DURATION

    async def play(self, start: float | None = None) -> PlaybackResult:
        """Plays the prompt; returns when the last frame is sent or :meth:`stop` is called.

        Args:
            start: loop time of frame 0; now when None.

        Returns:
            The outcome, including the stream state for :class:`~gateway.rtp.relay.RtpRelay`.

        Raises:
            RuntimeError: play() was already called.
            asyncio.CancelledError: the task was cancelled; sending stops at once.
        """
        if self._done is not None:
            raise RuntimeError("AnnouncementPlayer.play() may be called only once")
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        self.start = loop.time() if start is None else start
        self._handle = loop.call_at(self.start, self._send_frame, 0)
        try:
            completed = await self._done
        except asyncio.CancelledError:
            self._cancel_timer()
            raise
        return self.result(completed)

    def stop(self) -> None:
        """Stops sending (CANCEL, BYE, or the switch to staff); play() then returns."""
        self._cancel_timer()
        if self._done is not None and not self._done.done():
            self._done.set_result(False)

    def result(self, completed: bool) -> PlaybackResult:
        """The outcome so far (also valid after cancellation)."""
        sent = len(self.send_times)
        next_time = self.scheduled_time(sent) if self.start is not None else 0.0
        return PlaybackResult(
            completed=completed,
            frames_total=len(self.prompt.frames),
            frames_sent=sent - self._frames_unsent,
            frames_unsent=self._frames_unsent,
            stream=RtpStreamState(
                ssrc=self.ssrc,
                payload_type=self.payload_type,
                next_sequence=uint16_add(self.first_sequence, sent),
                next_timestamp=uint32_add(self.first_timestamp, sent * SAMPLES_PER_FRAME),
                next_time=next_time,
            ),
        )

    def _cancel_timer(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _send_frame(self, n: int) -> None:
        done = self._done
        assert done is not None
        assert self.start is not None
        if done.done():
            return
        try:
            loop = asyncio.get_running_loop()
            now = loop.time()
            due = self.start + n * FRAME_DURATION
            packet = RtpPacket(
                payload_type=self.payload_type,
                marker=1 if n == 0 else 0,
                sequence_number=uint16_add(self.first_sequence, n),
                timestamp=uint32_add(self.first_timestamp, n * SAMPLES_PER_FRAME),
                ssrc=self.ssrc,
                payload=self.prompt.frames[n],
            )
            if not self.endpoint.send(packet.serialize()):
                self._frames_unsent += 1
            self.send_times.append(now)
            self.lateness.append(now - due)
            if self.on_lateness is not None:
                self.on_lateness(now - due)
            if n + 1 < len(self.prompt.frames):
                self._handle = loop.call_at(due + FRAME_DURATION, self._send_frame, n + 1)
            else:
                self._handle = None
                done.set_result(True)
        except Exception as exc:
            # A timer callback has no caller: hand the failure to play() instead of
            # the loop's exception handler, so the call is not left waiting.
            self._handle = None
            done.set_exception(exc)
