"""The media stage: announcements to the caller, then the RTP relay to staff.

Theory of operation
-------------------
The B2BUA core asks for media with :class:`~gateway.b2bua.events.MediaNeeded`; the
gateway hands it to :meth:`MediaStage.prepare`, which starts one task per call:

1. open the caller's leg (A) on ``[media] bind_address`` and build the SDP answer
   with :func:`~gateway.sip.sdp.answer_for_announcement` (G.711 only: the player
   sends PCMU or PCMA). No playable stream (no G.711, sendonly, late offer, bad
   SDP) gives ``media_ready(uuid, None, None)``: the call goes on unanchored and the
   B leg says ``X-Voipgw-Recording-Notice: not-played``, so the PBX knows not to
   record (privacy policy: "You will be informed about recording of the call,
   before your call is connected to a member of staff").
2. open the staff leg (B) on ``staff_bind_address`` and build the B-leg offer: the
   caller's offer narrowed to the codec the caller was answered with (plus
   telephone-event), anchored on the B leg's port. The relay does not transcode, so
   staff must not pick a codec the caller never agreed to (RFC 3264 section 6.1).
3. ``gateway.media_ready(...)``: the core sends the 183 (early media) or the 200
   (answer-first) with the answer. In answer-first mode the prompt waits for the
   caller's first RTP packet (at most :data:`ANSWER_FIRST_WAIT`): many phones open
   their RTP socket only after the 200 OK, and frames sent before that are lost,
   while the notice must be heard whole.
4. play the prompt, then ``gateway.announcement_done(uuid, played)``; ``played`` is
   True only when every frame left towards the caller.
5. :meth:`MediaStage.answered` gives the callee's SDP: the B leg is aimed at it and
   the relay starts, continuing the prompt's RTP stream towards the caller (same
   SSRC, sequence and timestamp continue, RFC 3550 section 7.2).
6. while the relay runs, a side that sends no RTP for ``media_timeout`` is reported
   with ``gateway.media_inactive(uuid, leg)``, again each ``media_timeout`` while it
   stays silent: the B2BUA core decides (it ignores calls on hold and emergency
   calls). One loop timer per call, at the next moment a side could time out.

:meth:`MediaStage.ended` (every finished call) cancels the task and closes the
session: ports go back to the allocator and no task is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from gateway.b2bua.events import Announcement, MediaAnswered, MediaNeeded
from gateway.ops.metrics import Metrics
from gateway.rtp.codecs import PromptCache
from gateway.rtp.config import ANNOUNCEMENTS, MediaConfig
from gateway.rtp.endpoint import Addr
from gateway.rtp.packet import random32
from gateway.rtp.player import PlaybackResult
from gateway.rtp.ports import PortAllocator
from gateway.rtp.session import MediaSession
from gateway.sip.errors import ParseError
from gateway.sip.sdp import (
    Attribute,
    Codec,
    MediaDescription,
    Origin,
    SessionDescription,
    anchor_media,
    answer_for_announcement,
    parse_sdp,
)
from gateway.sip.uri import SipUri, TelUri, parse_uri

log = logging.getLogger("voipgw.media")

#: Longest wait for the caller's first RTP packet before an answer-first prompt, in
#: seconds; after it the prompt plays towards the SDP address anyway.
ANSWER_FIRST_WAIT = 2.0

#: Prompt names the router may use, mapped to ``[media.prompts]`` names.
PROMPT_ALIASES = {"nomadic_emergency_warning": "nomadic_warning"}
#: Announcement kind -> the prompt used when the named one is not configured.
KIND_PROMPTS = {"recording": "recording_notice", "nomadic-warning": "nomadic_warning"}


class GatewayCallbacks(Protocol):
    """What the stage calls back on :class:`gateway.service.server.Gateway`."""

    def media_ready(
        self, call_uuid: str, answer: bytes | None, b_offer: bytes | None
    ) -> bool: ...  # pragma: no cover

    def announcement_done(self, call_uuid: str, played: bool) -> None: ...  # pragma: no cover

    def media_inactive(self, call_uuid: str, leg: str) -> None: ...  # pragma: no cover


@dataclass(slots=True, eq=False)
class CallMedia:
    """The media of one call (mutable: the task fills it in as it goes).

    Attributes:
        call_uuid: the B2BUA's call id.
        session: the call's sockets, player and relay.
        task: the prepare/play task; None once finished.
        playback: the prompt's outcome, once over.
        callee: the callee's RTP address (from its SDP), once answered.
        media_index: index of the caller's m= line carrying the prompt.
        inactivity: the next dead-media check, while the relay runs.
    """

    call_uuid: str
    session: MediaSession
    task: asyncio.Task[None] | None = None
    playback: PlaybackResult | None = None
    callee: Addr | None = None
    media_index: int = 0
    inactivity: asyncio.TimerHandle | None = None


class MediaStage:
    """Announcements and RTP relay of every anchored call (the gateway's ``media=``).

    Args:
        gateway: the gateway whose calls it serves, which owns it and builds it
            (``gateway.service.server.Gateway``): the stage calls it back.
        config: the ``[media]`` section.
        metrics: counts announcements and RTP send lateness when given.
        allocator: the RTP port allocator (default: one over the configured range).
        prompts: encoded-prompt cache (default: a new one).
    """

    def __init__(
        self,
        gateway: GatewayCallbacks,
        config: MediaConfig,
        *,
        metrics: Metrics | None = None,
        allocator: PortAllocator | None = None,
        prompts: PromptCache | None = None,
    ) -> None:
        self.gateway = gateway
        self.config = config
        self.metrics = metrics
        self.allocator = allocator or PortAllocator(config.rtp_port_min, config.rtp_port_max)
        self.prompts = prompts or PromptCache()
        #: Calls with open media, by call uuid.
        self.calls: dict[str, CallMedia] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        """Tasks of this stage still running (empty when every call is over)."""
        running = {m.task for m in self.calls.values() if m.task is not None}
        return {t for t in running | self._closing if not t.done()}

    def warm(self) -> None:
        """Encodes every configured prompt in both G.711 laws (start-up, not per call)."""
        for by_name in self.config.prompts.values():
            for path in by_name.values():
                for law in ("PCMU", "PCMA"):
                    self.prompts.get(path, law)

    # ------------------------------------------------------------------ the calls' media

    def prepare(self, event: MediaNeeded) -> None:
        """Starts the call's media task (see the module docstring)."""
        if event.call_uuid in self.calls:
            return
        media = CallMedia(
            call_uuid=event.call_uuid,
            session=MediaSession(
                self.allocator,
                call_id=event.call_uuid,
                on_lateness=self.metrics.rtp_lateness if self.metrics is not None else None,
            ),
        )
        self.calls[event.call_uuid] = media
        media.task = asyncio.get_running_loop().create_task(
            self._run(media, event), name=f"media-{event.call_uuid}"
        )
        media.task.add_done_callback(lambda _: setattr(media, "task", None))

    def answered(self, event: MediaAnswered) -> None:
        """The callee answered: aim the B leg at its SDP and relay."""
        media = self.calls.get(event.call_uuid)
        if media is None:
            return
        try:
            description = parse_sdp(event.sdp)
        except ParseError as exc:
            log.warning("call %s: callee SDP unusable: %s", event.call_uuid, exc)
            return
        media.callee = _rtp_address(description, media.media_index)
        if media.callee is None:
            log.warning("call %s: callee SDP has no active audio stream", event.call_uuid)
            return
        leg = media.session.legs.get("b")
        if leg is not None:
            leg.set_remote(*media.callee)
        if media.playback is not None:
            self._start_relay(media)
        # else: the relay starts when the prompt is over (_run).

    def ended(self, call_uuid: str) -> None:
        """The call is over: stop everything and free its ports."""
        media = self.calls.pop(call_uuid, None)
        if media is None:
            return
        if media.task is not None:
            media.task.cancel()
        if media.inactivity is not None:
            media.inactivity.cancel()
        task = asyncio.get_running_loop().create_task(self._close(media))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Ends the media of every call (gateway shutdown) and waits for it."""
        for call_uuid in list(self.calls):
            self.ended(call_uuid)
        while self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # ------------------------------------------------------------------ the task

    async def _close(self, media: CallMedia) -> None:
        task = media.task
        if task is not None:
            # Wait for the cancelled task so its own cleanup (open_leg releasing a
            # half-open pair) runs before the session frees the rest.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(task, return_exceptions=True)
        await media.session.close()

    async def _run(self, media: CallMedia, event: MediaNeeded) -> None:
        announcement = event.announcement
        ready = False
        try:
            plan = await self._open(media, event)
            if plan is None:
                self._count(announcement, "not_played")
                self.calls.pop(media.call_uuid, None)
                await media.session.close()
                self.gateway.media_ready(media.call_uuid, None, None)
                return
            answer, b_offer, codec = plan
            ready = True
            if not self.gateway.media_ready(media.call_uuid, answer, b_offer):
                return  # the call ended meanwhile; ended() closes the session
            if announcement.mode == "answer-first":
                await _wait_for_latch(media.session, ANSWER_FIRST_WAIT)
            path = self.prompt_path(announcement)
            prompt = self.prompts.get(path, codec.encoding_name)
            result = await media.session.play("a", prompt, codec.payload_type)
            media.playback = result
            played = result.completed and result.frames_unsent == 0
            self._count(announcement, "played" if played else "skipped")
            if media.callee is not None:
                self._start_relay(media)
            self.gateway.announcement_done(media.call_uuid, played)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A media failure (ports exhausted, unreadable prompt) must cost the
            # notice, never the call: the core goes on marked not-played.
            log.exception("call %s: media stage failed", media.call_uuid)
            self._count(announcement, "not_played")
            if ready:
                self.gateway.announcement_done(media.call_uuid, False)
            else:
                # Unanchored from here on: free the ports now, not at the call's end.
                self.calls.pop(media.call_uuid, None)
                await media.session.close()
                self.gateway.media_ready(media.call_uuid, None, None)

    async def _open(
        self, media: CallMedia, event: MediaNeeded
    ) -> tuple[bytes, bytes, Codec] | None:
        """Opens both legs; returns (answer, B-leg offer, codec) or None (no G.711)."""
        if not event.offer:
            return None  # late offer: nothing to answer in a 183 (RFC 3261 13.2.1)
        try:
            offer = parse_sdp(event.offer)
        except ParseError as exc:
            log.info("call %s: caller SDP unusable: %s", media.call_uuid, exc)
            return None
        caller_ip = self.config.bind_address
        if ipaddress.ip_address(caller_ip).is_unspecified:
            caller_ip = _route_source(event.source.host)
        # A dry run picks the stream before any port is bound (port 9 is a
        # placeholder): calls without G.711 cost no sockets.
        probe = answer_for_announcement(offer, caller_ip, 9, 0, 0)
        if probe is None:
            return None
        index = next(i for i, m in enumerate(probe[0].media) if m.port != 0)
        media.media_index = index
        a = await media.session.open_leg(
            "a", self.config.bind_address, expected=_rtp_address(offer, index)
        )
        session_id = random32()
        built = answer_for_announcement(offer, caller_ip, a.port, session_id, 1)
        assert built is not None
        answer, codec = built
        b = await media.session.open_leg("b", self.config.staff_bind_address)
        staff_ip = self.config.staff_bind_address
        if ipaddress.ip_address(staff_ip).is_unspecified:
            staff_ip = caller_ip
        b_offer = narrowed_offer(offer, answer, index, staff_ip, b.port, session_id)
        return answer.serialize(), b_offer.serialize(), codec

    def _start_relay(self, media: CallMedia) -> None:
        playback = media.playback
        media.session.start_relay(continue_to_a=playback.stream if playback else None)
        if self.config.media_timeout > 0 and media.inactivity is None:
            loop = asyncio.get_running_loop()
            media.inactivity = loop.call_later(self.config.media_timeout, self._check_media, media)

    def _check_media(self, media: CallMedia) -> None:
        """Reports each side silent for ``media_timeout`` and sets the next check."""
        media.inactivity = None
        relay = media.session.relay
        if relay is None or not relay.running or media.call_uuid not in self.calls:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        timeout = self.config.media_timeout
        due = now + timeout
        for leg, last in list(relay.last_rtp.items()):
            if now - last >= timeout:
                log.info("call %s: no RTP from leg %s for %.0f s", media.call_uuid, leg, now - last)
                self.gateway.media_inactive(media.call_uuid, leg)
                if media.call_uuid not in self.calls:
                    return  # the core ended the call
            else:
                due = min(due, last + timeout)
        media.inactivity = loop.call_at(due, self._check_media, media)

    def _count(self, announcement: Announcement, result: str) -> None:
        if self.metrics is not None:
            self.metrics.announcement(announcement.kind, result)

    def prompt_path(self, announcement: Announcement) -> Path:
        """The WAV of an announcement: its prompt name ("recording-notice" and
        "recording_notice" alike), else the kind's default prompt.

        Raises:
            KeyError: neither is configured.
        """
        name = announcement.prompt.replace("-", "_")
        name = PROMPT_ALIASES.get(name, name)
        if name not in ANNOUNCEMENTS:
            name = KIND_PROMPTS[announcement.kind]
        return self.config.prompt_path(name, announcement.language)


def narrowed_offer(
    offer: SessionDescription,
    answer: SessionDescription,
    index: int,
    address: str,
    port: int,
    session_id: int,
) -> SessionDescription:
    """The B-leg offer: the caller's offer keeping only what the caller was answered
    with on stream ``index``, other streams disabled, anchored on the relay.

    The relay forwards packets without transcoding, so staff may only choose a
    payload type the caller accepted (the answer's), with the caller's own rtpmap
    and fmtp lines. Other m= lines get port 0 (RFC 3264 section 8.2: a stream is
    disabled by offering port zero), because the relay carries one audio stream.

    Args:
        offer: the caller's offer.
        answer: the gateway's answer to it.
        index: the m= line that carries the prompt and the relay.
        address: the relay's address towards staff.
        port: the relay's B-leg RTP port.
        session_id: o= session id for the gateway's own description.

    Returns:
        The description to send to staff.
    """
    kept = answer.media[index].formats
    streams: list[MediaDescription] = []
    for i, m in enumerate(offer.media):
        if i != index:
            streams.append(replace(m, port=0, connection=None, attributes=()))
            continue
        attributes = (
            *(a for a in m.attributes if not _other_format(a, kept) and a.name != "ptime"),
            Attribute(name="ptime", value="20"),
        )
        rtpmap_pts = {a.value.split()[0] for a in attributes if a.name == "rtpmap" and a.value}
        # Static payload types may come without a=rtpmap (RFC 3551 section 6); the
        # answer's rtpmap keeps the offer explicit for staff.
        extra = tuple(
            a
            for a in answer.media[index].attributes
            if a.name == "rtpmap" and a.value and a.value.split()[0] not in rtpmap_pts
        )
        streams.append(replace(m, formats=kept, attributes=attributes + extra))
    narrowed = replace(offer, media=tuple(streams))
    origin = Origin(
        username="voipgw",
        session_id=str(session_id),
        session_version="1",
        addrtype="IP6" if ":" in address else "IP4",
        address=address,
    )
    return anchor_media(
        narrowed, address, [port if i == index else 0 for i in range(len(streams))], origin=origin
    )


def _other_format(attribute: Attribute, kept: tuple[str, ...]) -> bool:
    """True for an rtpmap/fmtp line about a payload type not in ``kept``."""
    if attribute.name not in ("rtpmap", "fmtp") or not attribute.value:
        return False
    return attribute.value.split(maxsplit=1)[0] not in kept


def _rtp_address(description: SessionDescription, index: int) -> Addr | None:
    """The RTP address of m= line ``index`` (c= and port), None when disabled."""
    if index >= len(description.media):
        return None
    m = description.media[index]
    connection = description.connection_for(m)
    if m.port == 0 or connection is None:
        return None
    host = connection.address.split("/", 1)[0]
    try:
        if ipaddress.ip_address(host).is_unspecified:
            return None  # RFC 3264 section 8.4: 0.0.0.0 means hold, nowhere to send
    except ValueError:
        return None  # an FQDN in c=: wait for latching rather than resolve it here
    return (host, m.port)


def _route_source(host: str) -> str:
    """The local address the kernel would use to reach ``host`` (no packet is sent:
    connect() on a UDP socket only picks the route)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))
        return str(probe.getsockname()[0])


async def _wait_for_latch(session: MediaSession, limit: float) -> None:
    """Waits until the caller's RTP arrives (symmetric RTP latch) or ``limit`` passes."""
    endpoint = session.legs["a"].rtp
    if endpoint.latched is not None:
        return
    latched = asyncio.Event()
    previous = endpoint.on_latch

    def on_latch(source: Addr) -> None:
        if previous is not None:
            previous(source)
        latched.set()

    endpoint.on_latch = on_latch
    try:
        async with asyncio.timeout(limit):
            await latched.wait()
    except TimeoutError:
        pass
    finally:
        endpoint.on_latch = previous


_SEPARATORS = re.compile(r"[-.()\s]")


def normalise_number(text: str) -> str:
    """A dialled number without RFC 3966 visual separators (``-``, ``.``, ``(``,
    ``)``) or spaces; a leading ``+`` is kept."""
    return _SEPARATORS.sub("", text)


def dialled_number(request_uri: str) -> str | None:
    """The user part of a sip:/sips: Request-URI or the number of a tel: URI,
    %-unescaped, without parameters and visual separators; None when unparsable."""
    try:
        uri = parse_uri(request_uri)
    except (ParseError, ValueError):
        return None
    if isinstance(uri, TelUri):
        return normalise_number(uri.number)
    if isinstance(uri, SipUri):
        user = uri.user_unescaped
        if not user:
            return None
        # RFC 3261 19.1.6: a user=phone user part may carry tel parameters (";...").
        return normalise_number(user.split(";", 1)[0])
    return None


def recorded_line_lookup(config: MediaConfig) -> Callable[[str, str], Announcement | None]:
    """The CallRouter's ``recorded_line``: the recording notice for a recorded number.

    The dialled number (user part of the Request-URI, separators removed) is looked
    up in ``[[media.recorded_lines]]``. Language: a line configured with a language
    other than the default keeps it; otherwise the caller's language when prompts
    exist for it, else the default. (``RecordedLine.language`` is filled with the
    default when not configured, so "not configured" and "configured as the
    default" cannot be told apart here.)

    Args:
        config: the ``[media]`` section.

    Returns:
        ``lookup(dialled_request_uri, caller_language) -> Announcement | None``.
    """
    lines = {normalise_number(number): line for number, line in config.recorded_lines.items()}

    def lookup(request_uri: str, language: str) -> Announcement | None:
        number = dialled_number(request_uri)
        line = lines.get(number) if number is not None else None
        if line is None:
            return None
        chosen = line.language
        if chosen == config.default_language and language in config.prompts:
            chosen = language
        return Announcement(
            prompt=line.announcement.replace("_", "-"),
            language=chosen,
            mode=line.mode,
            kind="recording",
        )

    return lookup


__all__ = [
    "ANSWER_FIRST_WAIT",
    "CallMedia",
    "GatewayCallbacks",
    "MediaStage",
    "dialled_number",
    "narrowed_offer",
    "normalise_number",
    "recorded_line_lookup",
]
