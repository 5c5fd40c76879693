"""The demo peers' asyncio adapter: the gateway's transports, a transaction layer, the agent.

Shape as in :mod:`gateway.service.server` (STYLE 6): every input (a batch of messages from
the :class:`~gateway.transport.manager.TransportManager`, a transport error, a timer,
an answer ready) goes into the sans-IO core with ``now = loop.time()``, then
:meth:`DemoPeer._pump` hands the core's events to the agent, transmits what the
core wants sent and re-arms one loop timer at the core's next deadline.

UDP and TCP on one port, through the gateway's own transport manager: the gateway
sends an emergency INVITE (SDP plus PIDF-LO) over TCP when it is larger than 1300
bytes (RFC 3261 18.1.1), as a real centre would receive it. The manager answers on
the connection a request came in on (18.2.2) and opens one for a request of ours.

Media: each answered call gets its own RTP socket and plays a tone with the
gateway's own :class:`~gateway.rtp.player.AnnouncementPlayer` (paced G.711 frames),
answered with :func:`~gateway.sip.sdp.answer_for_announcement`, the same SDP answer
the gateway gives a caller who hears a prompt. When the tone ends the peer hangs up,
so a demo call also shows a BYE from the far end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import secrets
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from gateway.demo.agent import AgentEvent, AnsweringAgent, CallEnded, CallOffered
from gateway.demo.report import body_parts
from gateway.rtp.codecs import SAMPLE_RATE, EncodedPrompt, encode_g711
from gateway.rtp.endpoint import RtpEndpoint
from gateway.rtp.player import AnnouncementPlayer
from gateway.sip.errors import ParseError
from gateway.sip.events import Endpoint
from gateway.sip.sdp import answer_for_announcement, parse_sdp
from gateway.sip.transaction_layer import TransactionLayer
from gateway.transport.hints import PeerHints
from gateway.transport.manager import ListenSpec, TransportManager

log = logging.getLogger("voipgw.demo")

#: Sound level of the tones, as a fraction of full scale.
TONE_LEVEL = 0.3


@dataclass(frozen=True, slots=True, kw_only=True)
class Tone:
    """What a peer plays to each caller, and for how long.

    Attributes:
        frequency: in Hz.
        seconds: total playing time; the peer hangs up at the end.
        on: seconds of tone in each beep period.
        off: seconds of silence after each beep.
    """

    frequency: float
    seconds: float
    on: float = 0.4
    off: float = 0.2


def tone_pcm(tone: Tone) -> bytes:
    """The tone as 8000 Hz mono s16le samples: beeps of ``on`` s every ``on + off`` s."""
    period = tone.on + tone.off
    samples = []
    for n in range(round(tone.seconds * SAMPLE_RATE)):
        t = n / SAMPLE_RATE
        beeping = (t % period) < tone.on
        value = math.sin(2 * math.pi * tone.frequency * t) if beeping else 0.0
        samples.append(round(value * TONE_LEVEL * 32767))
    return struct.pack(f"<{len(samples)}h", *samples)


@cache
def encoded_tone(tone: Tone, encoding_name: str) -> EncodedPrompt:
    """The tone encoded once per codec (PCMU or PCMA), like a prompt."""
    return EncodedPrompt(
        path=Path(f"<tone {tone.frequency:g} Hz>"),
        encoding_name=encoding_name,
        frames=encode_g711(tone_pcm(tone), encoding_name),
    )


def bind_rtp_socket(host: str, attempts: int = 50) -> socket.socket:
    """A UDP socket on an even port of ``host`` (RFC 3550 11: RTP on even ports).

    Raises:
        OSError: no even port in ``attempts`` tries.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(attempts):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, 0))
        except OSError:
            sock.close()
            raise
        if sock.getsockname()[1] % 2 == 0:
            sock.setblocking(False)
            return sock
        sock.close()
    raise OSError(f"no even UDP port on {host} after {attempts} tries")


@dataclass(slots=True, eq=False)
class _Media:
    transport: asyncio.DatagramTransport
    player: AnnouncementPlayer
    task: asyncio.Task[None] | None = None


#: Called with each new call's INVITE; returns the line the peer prints for it.
Describe = Callable[[CallOffered], str]


@dataclass(slots=True, eq=False)
class DemoPeer:
    """One answering peer on a SIP address, UDP and TCP (the PBX stand-in or a centre).

    Args:
        name: shown in its lines ("pbx", "centre kerava").
        user: user part of its Contact.
        host: IP literal to listen on (SIP and RTP).
        port: UDP and TCP port for SIP.
        tone: what callers hear after the answer.
        describe: the line printed for each call.
        say: where lines go (print by default; tests collect them).
    """

    name: str
    user: str
    host: str
    port: int
    tone: Tone
    describe: Describe
    say: Callable[[str], None] = field(default=lambda line: print(line, flush=True))
    layer: TransactionLayer = field(init=False)
    agent: AnsweringAgent = field(init=False)
    transports: TransportManager = field(init=False)
    media: dict[str, _Media] = field(default_factory=dict, init=False)
    _timer: asyncio.TimerHandle | None = field(default=None, init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        local = Endpoint("UDP", self.host, self.port)
        self.layer = TransactionLayer(
            local=[local, Endpoint("TCP", self.host, self.port)],
            new_token=lambda: secrets.token_hex(8),
        )
        contact = f"<sip:{self.user}@{local.host_port}>"
        self.agent = AnsweringAgent(self.layer, contact, lambda: secrets.token_hex(6))
        # Hints of its own: the process-wide ones are the gateway's next hops.
        self.transports = TransportManager(
            self._on_messages, self._on_transport_error, hints=PeerHints()
        )

    async def start(self) -> None:
        """Binds the SIP sockets (UDP and TCP on the same port).

        Raises:
            OSError: the address is taken or not local.
        """
        try:
            for transport in ("UDP", "TCP"):
                await self.transports.listen(ListenSpec(transport, self.host, self.port))
        except OSError:
            await self.transports.close()
            raise

    async def close(self) -> None:
        """Hangs up calls in progress, stops media and closes the sockets."""
        now = self._now()
        for call_id in list(self.media):
            self.agent.hang_up(call_id, now)
            self._end_media(call_id)
        self._pump(now)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
        await self.transports.close()

    # ------------------------------------------------------------------ transports

    def _on_messages(self, batch: list[tuple[bytes, Endpoint]]) -> None:
        now = self._now()
        for data, source in batch:
            self.layer.receive_message(data, source, now)
        self._pump(now)

    def _on_transport_error(self, destination: Endpoint) -> None:
        # May be called from inside transports.send during _pump: defer.
        asyncio.get_running_loop().call_soon(self._transport_failed, destination)

    def _transport_failed(self, destination: Endpoint) -> None:
        log.info("%s: cannot reach %s", self.name, destination.host_port)
        now = self._now()
        self.layer.transport_failed(destination, now)  # RFC 3261 17.1.4
        self._pump(now)

    # ------------------------------------------------------------------ core

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _pump(self, now: float) -> None:
        while (event := self.layer.next_event()) is not None:
            for call_event in self.agent.receive(event, now):
                self._act(call_event)
        for data, destination in self.layer.datagrams_to_send():
            self.transports.send(data, destination)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.layer.get_timer()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self._now()
        self.layer.handle_timer(now)
        self._pump(now)

    def _act(self, event: AgentEvent) -> None:
        if isinstance(event, CallOffered):
            self.say(self.describe(event))
            self._spawn(self._answer(event))
        elif isinstance(event, CallEnded):
            self._ended(event)

    def _ended(self, event: CallEnded) -> None:
        self.say(f"{self.name}: call {event.call_id[:12]} ended ({event.reason})")
        self._end_media(event.call_id)
        self.agent.forget(event.call_id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, offered: CallOffered) -> None:
        call_id = offered.call_id
        try:
            media = await self._open_media(offered)
        except (ParseError, ValueError, OSError) as exc:
            log.warning("%s: cannot answer %s: %s", self.name, call_id, exc)
            media = None
        now = self._now()
        if media is None:
            # RFC 3264 6: no G.711 stream we can send on: 488 Not Acceptable Here.
            ended = self.agent.reject(call_id, 488, now)
            self._pump(now)
            if ended is not None:
                self._ended(ended)
            return
        sdp, opened = media
        if call_id not in self.agent.calls or self.agent.calls[call_id].ended:
            opened.transport.close()  # cancelled while the socket opened
            return
        self.media[call_id] = opened
        self.agent.answer(call_id, sdp, now)
        self._pump(now)
        opened.task = asyncio.get_running_loop().create_task(self._play_then_hang_up(call_id))

    async def _open_media(self, offered: CallOffered) -> tuple[bytes, _Media] | None:
        invite = offered.invite
        offer_bytes = body_parts(invite.headers.get("Content-Type") or "", invite.body).get(
            "application/sdp"
        )
        if offer_bytes is None:
            return None
        offer = parse_sdp(offer_bytes)
        sock = bind_rtp_socket(self.host)
        port = sock.getsockname()[1]
        answered = answer_for_announcement(offer, self.host, port, random.randrange(1, 2**31), 1)
        chosen = None
        if answered is not None:
            answer, codec = answered
            # The one stream the answer accepts (the others are answered with port 0).
            index = next(i for i, m in enumerate(answer.media) if m.port)
            media = offer.media[index]
            connection = offer.connection_for(media)
            if connection is not None:
                chosen = (answer, codec, (connection.address, media.port))
        if chosen is None:
            sock.close()
            return None
        answer, codec, remote = chosen
        loop = asyncio.get_running_loop()
        transport, endpoint = await loop.create_datagram_endpoint(
            lambda: RtpEndpoint(expected=remote), sock=sock
        )
        prompt = encoded_tone(self.tone, codec.encoding_name)
        player = AnnouncementPlayer(endpoint, prompt, codec.payload_type)
        return answer.serialize(), _Media(transport=transport, player=player)

    async def _play_then_hang_up(self, call_id: str) -> None:
        media = self.media.get(call_id)
        if media is None:
            return
        result = await media.player.play()
        if result.completed:
            now = self._now()
            ended = self.agent.hang_up(call_id, now)
            self._pump(now)
            if ended is not None:
                self._ended(ended)

    def _end_media(self, call_id: str) -> None:
        media = self.media.pop(call_id, None)
        if media is None:
            return
        media.player.stop()
        media.transport.close()


async def start_peers(peers: list[DemoPeer]) -> None:
    """Starts every peer, or none: a peer that cannot bind closes those started."""
    started: list[DemoPeer] = []
    try:
        for peer in peers:
            await peer.start()
            started.append(peer)
    except OSError:
        for peer in started:
            with contextlib.suppress(OSError):
                await peer.close()
        raise
