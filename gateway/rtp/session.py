"""MediaSession: the sockets, prompt and relay of one call, freed by one close().

How the lead's B2BUA drives it::

    session = MediaSession(allocator, call_id=call_id)
    a = await session.open_leg("a", "203.0.113.5", expected=(sdp_ip, sdp_port))
    answer, codec = answer_for_announcement(offer, "203.0.113.5", a.port, ...)
    # send 183 with answer, then:
    result = await session.play("a", cache.get(prompt_path, codec.encoding_name),
                                codec.payload_type)
    b = await session.open_leg("b", "10.0.0.1")      # towards staff
    # ... B answers: b.set_remote(ip, port) ...
    session.start_relay(continue_to_a=result.stream)
    ...
    await session.close()                             # BYE, CANCEL or failure

``close()`` stops the player and the relay, closes every transport and releases the
ports; tests assert ``allocator.leaked() == {}`` and no tasks left behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from gateway.rtp.codecs import EncodedPrompt
from gateway.rtp.endpoint import Addr, RtpEndpoint
from gateway.rtp.player import AnnouncementPlayer, PlaybackResult, RtpStreamState
from gateway.rtp.ports import PortAllocator
from gateway.rtp.relay import LegSockets, RtpRelay


@dataclass(frozen=True, slots=True, kw_only=True)
class Leg:
    """The gateway's media sockets towards one party.

    Attributes:
        name: "a" (caller) or "b" (staff), or any label.
        host: local bind address.
        port: local RTP port (even); RTCP is port + 1.
        sockets: the RTP and RTCP endpoints.
    """

    name: str
    host: str
    port: int
    sockets: LegSockets

    @property
    def rtp(self) -> RtpEndpoint:
        return self.sockets.rtp

    @property
    def rtcp(self) -> RtpEndpoint:
        return self.sockets.rtcp

    def set_remote(self, host: str, port: int) -> None:
        """Sets where to send before latching (the peer's SDP c= and m= port).

        RTCP goes to port + 1 (RFC 3550 section 11) until its own source latches.
        """
        self.rtp.expected = (host, port)
        if self.rtcp.latched is None:
            self.rtcp.expected = (host, port + 1)


class MediaSession:
    """Owns the media resources of one call.

    Args:
        allocator: the gateway's port allocator.
        call_id: label for leak reports.
        on_lateness: passed to every player (metrics).
    """

    def __init__(
        self,
        allocator: PortAllocator,
        *,
        call_id: str = "",
        on_lateness: Callable[[float], None] | None = None,
    ) -> None:
        self.allocator = allocator
        self.call_id = call_id
        self.on_lateness = on_lateness
        self.legs: dict[str, Leg] = {}
        self.relay: RtpRelay | None = None
        self.player: AnnouncementPlayer | None = None
        self._transports: list[asyncio.DatagramTransport] = []
        self._closed = False

    async def open_leg(
        self,
        name: str,
        host: str,
        *,
        expected: Addr | None = None,
        allowed_ips: frozenset[str] | None = None,
    ) -> Leg:
        """Binds a port pair and opens RTP/RTCP endpoints for one leg.

        Args:
            name: leg label, unique in this session.
            host: local bind address (the relay address towards that party).
            expected: the party's SDP RTP address, if already known.
            allowed_ips: IPs allowed to latch (see :mod:`gateway.rtp.endpoint`).

        Returns:
            The leg.

        Raises:
            RuntimeError: the session is closed or the leg exists.
            PortsExhaustedError: no free port pair.
        """
        if self._closed or name in self.legs:
            raise RuntimeError(f"cannot open leg {name!r} (closed or already open)")
        loop = asyncio.get_running_loop()
        rtp_sock, rtcp_sock = self.allocator.bind_pair(host, f"{self.call_id}/{name}")
        port = rtp_sock.getsockname()[1]
        try:
            rtp_transport, rtp = await loop.create_datagram_endpoint(
                lambda: RtpEndpoint(allowed_ips=allowed_ips, min_length=12), sock=rtp_sock
            )
            self._transports.append(rtp_transport)
            rtcp_transport, rtcp = await loop.create_datagram_endpoint(
                lambda: RtpEndpoint(allowed_ips=allowed_ips, min_length=8), sock=rtcp_sock
            )
            self._transports.append(rtcp_transport)
        except BaseException:
            # Includes CancelledError (re-raised): do not leak the pair.
            rtp_sock.close()
            rtcp_sock.close()
            self.allocator.release(port)
            raise
        leg = Leg(name=name, host=host, port=port, sockets=LegSockets(rtp=rtp, rtcp=rtcp))

        def aim_rtcp(source: Addr) -> None:
            # RTCP follows the latched RTP address until RTCP latches by itself.
            if rtcp.latched is None:
                rtcp.expected = (source[0], source[1] + 1)

        rtp.on_latch = aim_rtcp
        if expected is not None:
            leg.set_remote(*expected)
        self.legs[name] = leg
        return leg

    async def play(
        self,
        leg: str,
        prompt: EncodedPrompt,
        payload_type: int,
        *,
        start: float | None = None,
    ) -> PlaybackResult:
        """Plays a prompt on a leg and waits for it (cancel the task to stop it).

        Returns:
            The playback result; ``result.stream`` continues into the relay.

        Raises:
            KeyError: no such leg.
            asyncio.CancelledError: cancelled; the player stopped sending.
        """
        self.player = AnnouncementPlayer(
            self.legs[leg].rtp, prompt, payload_type, on_lateness=self.on_lateness
        )
        return await self.player.play(start)

    def start_relay(
        self, a: str = "a", b: str = "b", *, continue_to_a: RtpStreamState | None = None
    ) -> RtpRelay:
        """Stops any prompt and starts relaying between two legs.

        Raises:
            KeyError: a leg is missing.
        """
        if self.player is not None:
            self.player.stop()
        if self.relay is not None:
            self.relay.stop()
        self.relay = RtpRelay(
            self.legs[a].sockets, self.legs[b].sockets, continue_to_a=continue_to_a
        )
        self.relay.start(asyncio.get_running_loop().time())
        return self.relay

    async def close(self) -> None:
        """Stops everything and frees the ports (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.player is not None:
            self.player.stop()
        if self.relay is not None:
            self.relay.stop()
        for transport in self._transports:
            transport.close()
        # Let connection_lost callbacks run so the sockets are really closed before
        # their ports are handed out again.
        await asyncio.sleep(0)
        for leg in self.legs.values():
            self.allocator.release(leg.port)
        self._transports.clear()

    async def __aenter__(self) -> MediaSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
