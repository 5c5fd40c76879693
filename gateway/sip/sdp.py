"""Minimal SDP (RFC 4566) model, parser and serializer, plus the offer/answer steps
(RFC 3264) the gateway needs for its media legs.

Theory of operation
-------------------
The gateway terminates media only to play an announcement (the recording notice or
the nomadic emergency warning) and otherwise anchors it: it relays RTP between the
caller (A leg) and staff (B leg) through its own ports. So it needs three things:

1. :func:`parse_sdp` turns a body into a :class:`SessionDescription`; any bytes give
   either a description or :class:`~gateway.sip.errors.ParseError` (the parser
   invariant of the SIP core).
2. :func:`answer_for_announcement` picks the codec the announcement player can send
   (G.711 µ-law or A-law, RFC 3551 static payload types 0 and 8) and builds the answer.
3. :func:`anchor_media` rewrites c=/m= so that a description forwarded to the other
   leg points at the gateway's relay ports.

Lines keep their text (the model is a faithful round trip: ``parse(serialize(x)) ==
x``); typed views (rtpmap, fmtp, ptime, direction) are computed on demand. Lines the
gateway does not interpret (i=, u=, e=, p=, b=, r=, z=, k=) are kept in order and
re-emitted in the RFC 4566 section 5 order.

This module is sans-IO: it imports no asyncio, socket or time.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from gateway.sip.errors import ParseError, d

#: Largest SDP body accepted, in bytes. Real offers are well under 4 KiB; the limit
#: bounds the parser's work on hostile input.
MAX_SDP_LENGTH = 65536
#: Largest number of m= sections accepted.
MAX_MEDIA = 32
#: Largest number of lines accepted (session plus media sections).
MAX_LINES = 1024

# RFC 4566 section 5: "Some lines in each description are REQUIRED and some are
# OPTIONAL, but all MUST appear in exactly the order given here."  We accept any
# order after v= (many deployed stacks get it wrong) and emit this order.
_SESSION_ORDER = "vosiuepcbtrzka"
_MEDIA_ORDER = "micbka"

# type = %x61-7A ("a".."z"); a line is <type>=<value> (RFC 4566 section 5).
_LINE_RE = re.compile(r"([a-z])=(.*)")
# RFC 4566 section 9: token = 1*(token-char), used for media, proto parts and
# attribute names.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
# proto = token *("/" token)
_PROTO_RE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+(?:/[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+)*")

# Attributes that describe the sender's own transport and must not survive anchoring
# (the gateway's relay address replaces them): RFC 3605 rtcp, RFC 5761 rtcp-mux (our
# relay keeps RTCP on port + 1), RFC 8839 ICE.
_TRANSPORT_ATTRIBUTES = frozenset(
    {"rtcp", "rtcp-mux", "candidate", "remote-candidates", "ice-ufrag", "ice-pwd",
     "ice-options", "ice-lite", "end-of-candidates"}
)  # fmt: skip


class Direction(enum.Enum):
    """Media direction attribute (RFC 3264 section 5.1); sendrecv when absent."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"


@dataclass(frozen=True, slots=True, kw_only=True)
class Codec:
    """An RTP audio encoding as negotiated in SDP.

    Attributes:
        encoding_name: RFC 3551 name, "PCMU" or "PCMA" for the player.
        payload_type: RTP payload type number used on the wire (0-127).
        clock_rate: RTP clock rate, in Hz.
    """

    encoding_name: str
    payload_type: int
    clock_rate: int = 8000


#: G.711 µ-law, RFC 3551 section 6 static payload type 0.
PCMU = Codec(encoding_name="PCMU", payload_type=0)
#: G.711 A-law, RFC 3551 section 6 static payload type 8.
PCMA = Codec(encoding_name="PCMA", payload_type=8)
_STATIC_AUDIO = {0: PCMU, 8: PCMA}


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpMap:
    """One ``a=rtpmap:<pt> <name>/<clock>[/<channels>]`` (RFC 4566 section 6).

    Attributes:
        payload_type: the payload type number.
        encoding_name: encoding name as written (compare case-insensitively).
        clock_rate: clock rate, in Hz.
        channels: channel count for audio, None when not given (means 1).
    """

    payload_type: int
    encoding_name: str
    clock_rate: int
    channels: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Attribute:
    """One a= line: ``a=<name>`` (property) or ``a=<name>:<value>``."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
    """The o= line (RFC 4566 section 5.2).

    Attributes:
        username: "-" when the host has no user ids.
        session_id: numeric string, kept as text so leading zeros survive.
        session_version: numeric string; incremented on each new offer/answer.
        nettype: "IN".
        addrtype: "IP4" or "IP6".
        address: address of the originating host.
    """

    username: str = "-"
    session_id: str
    session_version: str
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """A c= line (RFC 4566 section 5.7).

    Attributes:
        nettype: "IN".
        addrtype: "IP4" or "IP6".
        address: unicast address or FQDN; multicast keeps its "/ttl" suffix.
    """

    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str

    @classmethod
    def for_ip(cls, ip: str) -> Connection:
        """Builds the c= value for an IPv4 or IPv6 literal.

        Raises:
            ValueError: ip is not an IP address literal.
        """
        version = ipaddress.ip_address(ip).version
        return cls(addrtype="IP6" if version == 6 else "IP4", address=ip)

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaDescription:
    """One media section: m= plus its c=, a= and other lines.

    Attributes:
        media: "audio", "video", ...
        port: transport port; 0 marks a rejected or disabled stream (RFC 3264 section 6).
        port_count: the "/<number of ports>" suffix, None when absent.
        proto: transport protocol, e.g. "RTP/AVP".
        formats: media formats as written (payload type numbers for RTP protocols).
        connection: media-level c=, overriding the session-level one.
        attributes: a= lines in order.
        other_lines: i=, b=, k= lines as (type, value), in order.
    """

    media: str
    port: int
    port_count: int | None = None
    proto: str
    formats: tuple[str, ...]
    connection: Connection | None = None
    attributes: tuple[Attribute, ...] = ()
    other_lines: tuple[tuple[str, str], ...] = ()

    def attribute_values(self, name: str) -> list[str | None]:
        """Returns the values of every a=<name> line, in order."""
        return [a.value for a in self.attributes if a.name == name]

    @property
    def is_rtp(self) -> bool:
        """True for RTP profiles (RTP/AVP, RTP/SAVP, RTP/AVPF, UDP/TLS/RTP/SAVPF...)."""
        return "RTP/" in self.proto

    @property
    def payload_types(self) -> tuple[int, ...]:
        """Formats as payload type numbers (validated by the parser for RTP protos)."""
        return tuple(int(f) for f in self.formats) if self.is_rtp else ()

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        """a=rtpmap lines by payload type; malformed lines are ignored (RFC 4566
        section 5.13: attributes a parser does not understand are ignored)."""
        result: dict[int, RtpMap] = {}
        for value in self.attribute_values("rtpmap"):
            rtpmap = _parse_rtpmap(value or "")
            if rtpmap is not None:
                result.setdefault(rtpmap.payload_type, rtpmap)
        return result

    def fmtp(self, payload_type: int) -> str | None:
        """Returns the format parameters of ``a=fmtp:<payload_type> ...``, if any."""
        prefix = f"{payload_type} "
        for value in self.attribute_values("fmtp"):
            if value is not None and value.startswith(prefix):
                return value[len(prefix) :].strip()
        return None

    @property
    def ptime(self) -> int | None:
        """a=ptime, in milliseconds (RFC 4566 section 6), None when absent or bad."""
        for value in self.attribute_values("ptime"):
            if value is not None and value.strip().isdigit():
                return int(value)
        return None

    @property
    def direction(self) -> Direction:
        """The media-level direction attribute, sendrecv when absent (RFC 3264 5.1)."""
        for attr in self.attributes:
            if attr.value is None and attr.name in _DIRECTIONS:
                return Direction(attr.name)
        return Direction.SENDRECV

    def telephone_event_payload_type(self) -> int | None:
        """The payload type of RFC 4733 telephone-event/8000 in this section, if any."""
        for pt, rtpmap in self.rtpmaps.items():
            if (
                rtpmap.encoding_name.lower() == "telephone-event"
                and rtpmap.clock_rate == 8000
                and str(pt) in self.formats
            ):
                return pt
        return None

    def lines(self) -> list[str]:
        """The section's lines, without line endings, in RFC 4566 order."""
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        typed: list[tuple[str, str]] = list(self.other_lines)
        if self.connection is not None:
            typed.append(("c", str(self.connection)))
        typed.extend(("a", str(a)) for a in self.attributes)
        typed.sort(key=lambda line: _MEDIA_ORDER.index(line[0]))
        head = f"m={self.media} {port} {self.proto} {' '.join(self.formats)}".rstrip()
        return [head] + [f"{t}={v}" for t, v in typed]


_DIRECTIONS = frozenset(d.value for d in Direction)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionDescription:
    """A whole SDP body.

    Attributes:
        origin: the o= line.
        session_name: the s= text (" " or "-" when the sender has no name).
        connection: session-level c=, the default for every media section.
        timing: t= and r= lines as (type, value), in order; "0 0" when built here.
        attributes: session-level a= lines.
        other_lines: i=, u=, e=, p=, b=, z=, k= lines as (type, value), in order.
        media: the m= sections, in order (order matters in RFC 3264).
    """

    version: int = 0
    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    timing: tuple[tuple[str, str], ...] = (("t", "0 0"),)
    attributes: tuple[Attribute, ...] = ()
    other_lines: tuple[tuple[str, str], ...] = ()
    media: tuple[MediaDescription, ...] = field(default=())

    def connection_for(self, media: MediaDescription) -> Connection | None:
        """The c= that applies to a media section (its own, else the session's)."""
        return media.connection if media.connection is not None else self.connection

    def serialize(self) -> bytes:
        """Returns the body as bytes, CRLF line endings (RFC 4566 section 5).

        Returns:
            The UTF-8 encoded description.
        """
        typed: list[tuple[str, str]] = [("o", str(self.origin)), ("s", self.session_name)]
        typed.extend(self.other_lines)
        if self.connection is not None:
            typed.append(("c", str(self.connection)))
        typed.extend(self.timing)
        typed.extend(("a", str(a)) for a in self.attributes)
        typed.sort(key=lambda line: _SESSION_ORDER.index(line[0]))
        lines = [f"v={self.version}"] + [f"{t}={v}" for t, v in typed]
        for media in self.media:
            lines.extend(media.lines())
        return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")

    def __bytes__(self) -> bytes:
        return self.serialize()


def is_on_hold(description: SessionDescription) -> bool:
    """Whether an offer puts its audio on hold: a direction other than sendrecv (at
    session or media level) or the RFC 2543 hold address 0.0.0.0 (RFC 3264 8.4).
    Either way one side stops sending, so its silence is expected."""
    session_level = next(
        (a.name for a in description.attributes if a.value is None and a.name in _DIRECTIONS),
        Direction.SENDRECV.value,
    )
    for media in description.media:
        if media.media != "audio" or media.port == 0:
            continue
        # A media-level direction overrides the session's (RFC 4566 6).
        if media.direction is not Direction.SENDRECV or session_level != "sendrecv":
            return True
        connection = description.connection_for(media)
        if connection is not None and connection.address in ("0.0.0.0", "::"):
            return True
    return False


def parse_sdp(data: bytes) -> SessionDescription:
    """Parses an SDP body.

    Accepts LF as well as CRLF line endings (RFC 4566 section 5: "parsers SHOULD be
    tolerant and also accept records terminated with a single newline character") and
    session-level lines in any order after v=.

    Args:
        data: the message body.

    Returns:
        The parsed description.

    Raises:
        ParseError: the body is not a valid SDP description or exceeds the limits.
    """
    if len(data) > MAX_SDP_LENGTH:
        raise ParseError(f"SDP body is longer than {MAX_SDP_LENGTH} bytes", status_hint=513)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # RFC 4566 section 5: the default charset is ISO-10646 in UTF-8; a=charset
        # is not supported by this gateway.
        raise ParseError(f"SDP body is not UTF-8: {d(data)}") from None
    raw_lines = text.split("\n")
    if raw_lines and raw_lines[-1] == "":
        raw_lines.pop()
    if len(raw_lines) > MAX_LINES:
        raise ParseError(f"SDP body has more than {MAX_LINES} lines")
    lines: list[tuple[str, str]] = []
    for raw in raw_lines:
        line = raw[:-1] if raw.endswith("\r") else raw
        match = _LINE_RE.fullmatch(line)
        if match is None:
            raise ParseError(f"SDP line is not <type>=<value>: {d(line.encode())}")
        lines.append((match[1], match[2]))
    if not lines or lines[0] != ("v", "0"):
        raise ParseError("SDP body does not start with v=0")

    # Split into the session part and one part per m= line.
    sections: list[list[tuple[str, str]]] = [[]]
    for kind, value in lines[1:]:
        if kind == "m":
            if len(sections) > MAX_MEDIA:
                raise ParseError(f"SDP body has more than {MAX_MEDIA} media sections")
            sections.append([])
        sections[-1].append((kind, value))
    session = _parse_session(sections[0])
    media = tuple(_parse_media(section) for section in sections[1:])
    # RFC 4566 section 5.7: "A session description MUST contain either at least one
    # "c=" field in each media description or a single "c=" field at the session level."
    if session.connection is None and any(m.connection is None for m in media):
        raise ParseError("SDP body has a media section without a c= line")
    return replace(session, media=media)


def _parse_session(lines: list[tuple[str, str]]) -> SessionDescription:
    origin: Origin | None = None
    session_name: str | None = None
    connection: Connection | None = None
    timing: list[tuple[str, str]] = []
    attributes: list[Attribute] = []
    other: list[tuple[str, str]] = []
    for kind, value in lines:
        if kind == "o":
            if origin is not None:
                raise ParseError("SDP body has more than one o= line")
            origin = _parse_origin(value)
        elif kind == "s":
            if session_name is not None:
                raise ParseError("SDP body has more than one s= line")
            session_name = value
        elif kind == "c":
            if connection is not None:
                raise ParseError("SDP body has more than one session-level c= line")
            connection = _parse_connection(value)
        elif kind in "tr":
            timing.append((kind, value))
        elif kind == "a":
            attributes.append(_parse_attribute(value))
        elif kind in "iuepbzk":
            other.append((kind, value))
        else:
            # RFC 4566 section 5: "An SDP parser MUST completely ignore any session
            # description that contains a type letter that it does not understand."
            raise ParseError(f"SDP body has an unknown line type {kind!r}")
    if origin is None:
        raise ParseError("SDP body has no o= line")
    if session_name is None:
        raise ParseError("SDP body has no s= line")
    if not timing or timing[0][0] != "t":
        raise ParseError("SDP body has no t= line")
    return SessionDescription(
        origin=origin,
        session_name=session_name,
        connection=connection,
        timing=tuple(timing),
        attributes=tuple(attributes),
        other_lines=tuple(other),
    )


def _parse_media(lines: list[tuple[str, str]]) -> MediaDescription:
    # m=<media> <port>[/<number of ports>] <proto> <fmt> ... (RFC 4566 section 5.14)
    parts = lines[0][1].split(" ")
    if len(parts) < 4 or not _TOKEN_RE.fullmatch(parts[0]) or not _PROTO_RE.fullmatch(parts[2]):
        raise ParseError(f"SDP m= line is malformed: {d(lines[0][1].encode())}")
    port_text, _, count_text = parts[1].partition("/")
    port = _parse_int(port_text, 0, 65535, "m= port")
    port_count = _parse_int(count_text, 1, 65535, "m= port count") if count_text else None
    formats = tuple(parts[3:])
    if "RTP/" in parts[2]:
        for fmt in formats:
            _parse_int(fmt, 0, 127, "RTP payload type")
    elif not all(_TOKEN_RE.fullmatch(f) for f in formats):
        raise ParseError(f"SDP m= line has a bad format: {d(lines[0][1].encode())}")
    connection: Connection | None = None
    attributes: list[Attribute] = []
    other: list[tuple[str, str]] = []
    for kind, value in lines[1:]:
        if kind == "c":
            if connection is not None:
                raise ParseError("SDP media section has more than one c= line")
            connection = _parse_connection(value)
        elif kind == "a":
            attributes.append(_parse_attribute(value))
        elif kind in "ibk":
            other.append((kind, value))
        else:
            raise ParseError(f"SDP line type {kind!r} is not allowed in a media section")
    return MediaDescription(
        media=parts[0],
        port=port,
        port_count=port_count,
        proto=parts[2],
        formats=formats,
        connection=connection,
        attributes=tuple(attributes),
        other_lines=tuple(other),
    )


def _parse_origin(value: str) -> Origin:
    # o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>
    parts = value.split(" ")
    if len(parts) != 6 or not all(parts) or not (parts[1].isdigit() and parts[2].isdigit()):
        raise ParseError(f"SDP o= line is malformed: {d(value.encode())}")
    return Origin(
        username=parts[0],
        session_id=parts[1],
        session_version=parts[2],
        nettype=parts[3],
        addrtype=parts[4],
        address=parts[5],
    )


def _parse_connection(value: str) -> Connection:
    # c=<nettype> <addrtype> <connection-address>
    parts = value.split(" ")
    if len(parts) != 3 or not all(parts):
        raise ParseError(f"SDP c= line is malformed: {d(value.encode())}")
    nettype, addrtype, address = parts
    if nettype == "IN" and addrtype in ("IP4", "IP6"):
        host = address.split("/", 1)[0]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        # An FQDN is legal; an IP literal of the wrong family is not.
        if ip is not None and ip.version != (4 if addrtype == "IP4" else 6):
            raise ParseError(f"SDP c= address does not match {addrtype}: {d(value.encode())}")
    return Connection(nettype=nettype, addrtype=addrtype, address=address)


def _parse_attribute(value: str) -> Attribute:
    # attribute = (att-field ":" att-value) / att-field (RFC 4566 section 9)
    name, sep, rest = value.partition(":")
    if not _TOKEN_RE.fullmatch(name):
        raise ParseError(f"SDP a= line has a bad name: {d(value.encode())}")
    return Attribute(name=name, value=rest if sep else None)


def _parse_rtpmap(value: str) -> RtpMap | None:
    # a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]
    pt_text, _, rest = value.partition(" ")
    parts = rest.strip().split("/")
    if not pt_text.isdigit() or len(parts) not in (2, 3) or not parts[1].isdigit():
        return None
    if len(parts) == 3 and not parts[2].isdigit():
        return None
    return RtpMap(
        payload_type=int(pt_text),
        encoding_name=parts[0],
        clock_rate=int(parts[1]),
        channels=int(parts[2]) if len(parts) == 3 else None,
    )


def _parse_int(text: str, lo: int, hi: int, what: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 5 or not lo <= int(text) <= hi:
        raise ParseError(f"SDP {what} is not an integer {lo}-{hi}: {d(text.encode())}")
    return int(text)


def _g711_codec(media: MediaDescription, pt: int) -> Codec | None:
    """The G.711 codec a payload type stands for, via a=rtpmap or the static table."""
    rtpmap = media.rtpmaps.get(pt)
    if rtpmap is None:
        return _STATIC_AUDIO.get(pt)
    if rtpmap.clock_rate != 8000 or rtpmap.channels not in (None, 1):
        return None
    name = rtpmap.encoding_name.upper()
    if name in ("PCMU", "PCMA"):
        # A dynamic number mapped to PCMU/PCMA is legal (RFC 3551 section 3); answer
        # with the number the caller chose.
        return Codec(encoding_name=name, payload_type=pt)
    return None


def answer_for_announcement(
    offer: SessionDescription,
    local_ip: str,
    local_port: int,
    session_id: int,
    version: int,
    *,
    ptime: int = 20,
) -> tuple[SessionDescription, Codec] | None:
    """Builds the SDP answer for a call that first hears an announcement.

    The first audio RTP/AVP stream whose direction lets us send is accepted; all
    other m= lines are answered with port 0 (RFC 3264 section 6: "the answer MUST
    contain exactly the same number of m= lines as the offer", a rejected stream has
    port zero). Codec: the first of PCMU or PCMA in the caller's preference order
    (RFC 3264 section 6.1: the answerer SHOULD keep the offer's order); the answer
    lists that codec and, when offered, telephone-event/8000 (RFC 4733) with the
    offer's payload type number and fmtp, so DTMF can flow after the switch to staff.

    Direction (RFC 3264 section 6.1 table): an offer of sendrecv gets sendrecv (the
    same answer stays valid when the stream later carries staff media both ways: an
    answer in a 183 must equal the one in the 200); recvonly gets sendonly. A
    sendonly or inactive offer gets None, like an offer without G.711: the caller
    could not hear the notice, and the privacy promise ("you will be informed about
    recording before your call is connected") then forbids connecting the call as
    if they had. The caller of this function decides (488, or an unrecorded route).

    Args:
        offer: the caller's offer.
        local_ip: the gateway's RTP address towards the caller (IPv4 or IPv6 literal).
        local_port: the gateway's (even) RTP port towards the caller; RTCP is +1.
        session_id: o= session id, unique for the gateway (RFC 4566 section 5.2).
        version: o= session version.
        ptime: packetization time the player uses, in milliseconds.

    Returns:
        (answer, codec) or None when no stream can carry the announcement.

    Raises:
        ValueError: local_ip is not an IP address literal.
    """
    connection = Connection.for_ip(local_ip)
    chosen: tuple[int, Codec] | None = None
    for index, media in enumerate(offer.media):
        if media.media != "audio" or media.proto != "RTP/AVP" or media.port == 0:
            continue
        if media.direction not in (Direction.SENDRECV, Direction.RECVONLY):
            continue
        codecs = (_g711_codec(media, pt) for pt in media.payload_types)
        codec = next((c for c in codecs if c is not None), None)
        if codec is not None:
            chosen = (index, codec)
            break
    if chosen is None:
        return None
    chosen_index, codec = chosen
    answered: list[MediaDescription] = []
    for index, media in enumerate(offer.media):
        if index != chosen_index:
            # Rejected stream: port 0, at least one format (RFC 3264 section 6).
            answered.append(
                MediaDescription(
                    media=media.media, port=0, proto=media.proto, formats=media.formats[:1]
                )
            )
            continue
        formats = [str(codec.payload_type)]
        attributes = [
            Attribute(name="rtpmap", value=f"{codec.payload_type} {codec.encoding_name}/8000")
        ]
        event_pt = media.telephone_event_payload_type()
        if event_pt is not None:
            formats.append(str(event_pt))
            attributes.append(Attribute(name="rtpmap", value=f"{event_pt} telephone-event/8000"))
            fmtp = media.fmtp(event_pt)
            attributes.append(Attribute(name="fmtp", value=f"{event_pt} {fmtp or '0-15'}"))
        attributes.append(Attribute(name="ptime", value=str(ptime)))
        answer_direction = (
            Direction.SENDONLY if media.direction is Direction.RECVONLY else Direction.SENDRECV
        )
        attributes.append(Attribute(name=answer_direction.value))
        answered.append(
            MediaDescription(
                media="audio",
                port=local_port,
                proto="RTP/AVP",
                formats=tuple(formats),
                attributes=tuple(attributes),
            )
        )
    answer = SessionDescription(
        origin=Origin(
            username="voipgw",
            session_id=str(session_id),
            session_version=str(version),
            addrtype=connection.addrtype,
            address=local_ip,
        ),
        session_name="voipgw",
        connection=connection,
        media=tuple(answered),
    )
    return answer, codec


def anchor_media(
    description: SessionDescription,
    address: str,
    ports: Sequence[int],
    *,
    origin: Origin | None = None,
) -> SessionDescription:
    """Rewrites a description so its media flows through the gateway's relay.

    Every active m= line (port != 0) gets the gateway's port for that stream; the
    session c= becomes ``address`` and media-level c= lines are dropped. Attributes
    that describe the original sender's transport (RFC 3605 a=rtcp, RFC 5761
    a=rtcp-mux, ICE) are removed, because the relay uses port + 1 for RTCP and does
    not run ICE. Rejected streams (port 0) stay rejected.

    Args:
        description: the description received from one leg.
        address: the gateway's relay address towards the other leg (IP literal).
        ports: the gateway's RTP port for each m= line, in order (ignored for port 0).
        origin: the o= line to use (a B2BUA is the originator towards the other leg);
            None keeps the original.

    Returns:
        The rewritten description.

    Raises:
        ValueError: address is not an IP literal, or ports has the wrong length.
    """
    if len(ports) != len(description.media):
        raise ValueError(f"anchor_media needs {len(description.media)} ports, got {len(ports)}")
    connection = Connection.for_ip(address)
    media = tuple(
        m
        if m.port == 0
        else replace(
            m,
            port=port,
            connection=None,
            attributes=tuple(a for a in m.attributes if a.name not in _TRANSPORT_ATTRIBUTES),
        )
        for m, port in zip(description.media, ports)
    )
    return replace(
        description,
        origin=origin if origin is not None else description.origin,
        connection=connection,
        attributes=tuple(a for a in description.attributes if a.name not in _TRANSPORT_ATTRIBUTES),
        media=media,
    )
