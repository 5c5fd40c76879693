"""The demo peers' asyncio adapter: UDP and TCP sockets, a transaction layer, the agent.

Shape as in :mod:`gateway.server` (STYLE 6): every input (a datagram, a message cut
from a TCP stream, a timer, an answer ready) goes into the sans-IO core with
``now = loop.time()``, then
:meth:`DemoPeer._pump` hands the core's events to the agent, transmits what the
core wants sent and re-arms one loop timer at the core's next deadline.

TCP, because the gateway sends an emergency INVITE (SDP plus PIDF-LO) over TCP when
it is larger than 1300 bytes (RFC 3261 18.1.1), as a real centre would receive it.
Responses go back on the connection the request came in on (18.2.2); a request of
ours for a TCP destination without a connection opens one.

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
from gateway.sip.framing import PONG, StreamFramer
from gateway.sip.sdp import answer_for_announcement, parse_sdp
from gateway.sip.transaction_layer import TransactionLayer

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


class _StreamConnection(asyncio.Protocol):
    """One TCP connection of a peer, cut into messages by the project's framer."""

    def __init__(self, peer: DemoPeer) -> None:
        self.peer = peer
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.remote = Endpoint("TCP", "", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        host, port = transport.get_extra_info("peername")[:2]
        self.remote = Endpoint("TCP", host, port)
        self.peer.connections[self.remote] = self

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.framer.feed(data)
        for _ in range(self.framer.pop_pings()):
            self.transport.write(PONG)  # RFC 5626 3.5.1
        try:
            while (message := self.framer.next_message()) is not None:
                self.peer.message_received(message, self.remote)
        except ParseError:
            # The next message boundary is unknown: the stream is lost (framing).
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer.connections.get(self.remote) is self:
            del self.peer.connections[self.remote]


@dataclass(slots=True, eq=False)
class _Media:
    transport: asyncio.DatagramTransport
    player: AnnouncementPlayer
    task: asyncio.Task[None] | None = None


#: Called with each new call's INVITE; returns the line the peer prints for it.
Describe = Callable[[CallOffered], str]


@dataclass(slots=True, eq=False)
class DemoPeer(asyncio.DatagramProtocol):
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
    transport: asyncio.DatagramTransport | None = field(default=None, init=False)
    server: asyncio.Server | None = field(default=None, init=False)
    connections: dict[Endpoint, _StreamConnection] = field(default_factory=dict, init=False)
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

    async def start(self) -> None:
        """Binds the SIP sockets (UDP and TCP on the same port).

        Raises:
            OSError: the address is taken or not local.
        """
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(self.host, self.port))
        try:
            self.server = await loop.create_server(
                lambda: _StreamConnection(self), self.host, self.port, reuse_address=True
            )
        except OSError:
            assert self.transport is not None
            self.transport.close()
            raise

    async def close(self) -> None:
        """Hangs up calls in progress, stops media and closes the socket."""
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
        if self.transport is not None:
            self.transport.close()
        if self.server is not None:
            self.server.close()
        for connection in list(self.connections.values()):
            if connection.transport is not None:
                connection.transport.close()
        if self.server is not None:
            await self.server.wait_closed()

    # ------------------------------------------------------------------ asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not data.strip():
            return  # CRLF keep-alive (RFC 5626 3.5.1)
        self.message_received(data, Endpoint("UDP", addr[0], addr[1]))

    def message_received(self, data: bytes, source: Endpoint) -> None:
        """One datagram, or one message cut from a TCP stream."""
        now = self._now()
        self.layer.receive_message(data, source, now)
        self._pump(now)

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable for a caller that went away: its transactions time out.
        log.debug("%s: socket error %s", self.name, exc)

    # ------------------------------------------------------------------ core

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _pump(self, now: float) -> None:
        while (event := self.layer.next_event()) is not None:
            for call_event in self.agent.receive(event, now):
                self._act(call_event)
        for data, destination in self.layer.datagrams_to_send():
            self._send(data, destination)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.layer.get_timer()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _send(self, data: bytes, destination: Endpoint) -> None:
        if destination.transport == "UDP":
            if self.transport is not None:
                self.transport.sendto(data, (destination.host, destination.port))
            return
        connection = self.connections.get(destination)
        if connection is not None and connection.transport is not None:
            connection.transport.write(data)
        else:
            self._spawn(self._connect_and_send(data, destination))

    async def _connect_and_send(self, data: bytes, destination: Endpoint) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_connection(
                lambda: _StreamConnection(self), destination.host, destination.port
            )
        except OSError as exc:
            log.info("%s: cannot connect to %s: %s", self.name, destination.host_port, exc)
            now = self._now()
            self.layer.transport_failed(destination, now)  # RFC 3261 17.1.4
            self._pump(now)
            return
        # connection_made filed it under its peer address: the next request reuses it.
        transport.write(data)

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
