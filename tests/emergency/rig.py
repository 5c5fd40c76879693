"""The running app with emergency centres as test peers, for end-to-end tests.

* :class:`PsapUas`: a small Python UDP UAS standing in for an emergency centre (or
  the PBX behind the gateway). It records every INVITE it receives with its arrival
  time, and answers by its ``mode``: ``answer`` (100, 200 with SDP), ``503``, or
  ``silent`` (never answers: the gateway's failover timer must act).
* :func:`emergency_rig`: imports the demo routing data (deploy/demo/sites.toml) with
  every centre's URI rewritten to a peer on a free port, then starts
  :func:`gateway.service.app.running_app` on a free UDP port of 127.0.0.1 with
  ``[database] url`` on the test's database.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import asyncpg

from gateway.b2bua import CallEnded
from gateway.config import parse_config
from gateway.service.app import App, running_app
from gateway.service.sitestore import import_sites
from routing.sites_file import parse_sites
from tests.emergency.additional_data_check import ADDITIONAL_DATA_TYPES, additional_data_blocks
from tests.emergency.pidf_check import check_pidf, split_multipart
from tests.interop.gateway import gateway_config, sip_target
from tests.interop.sipp import SippResult, free_port, run_uac

OFFICE_IP = "127.0.10.5"
"""In Setera's Espoo office LAN (demo data): office calls."""
VPN_IP = "127.0.30.7"
"""In Setera's VPN pool: nomadic (a VPN client may be anywhere)."""
BARRED_SITE_IP = "127.0.50.5"
"""In the office LAN of the barred customer Suljettu Oy (Vaasa)."""

DEMO_SITES = Path(__file__).parents[2] / "deploy" / "demo" / "sites.toml"

CENTRE_HOST = "127.0.112.1"
"""The demo centres' own address (deploy/demo/sites.toml), apart from the PBX's
127.0.0.1: a centre is recognised by its transport address (gateway/edge/peers.py)."""

#: Demo centre id -> its port on CENTRE_HOST in deploy/demo/sites.toml.
DEMO_CENTRE_PORTS = {
    "national": 5090,
    "kerava": 5091,
    "turku": 5092,
    "pori": 5093,
    "vaasa": 5094,
    "kuopio": 5095,
    "oulu": 5096,
}

#: RFC 3261 7.3.3 compact header forms the peers may receive.
_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "c": "content-type", "m": "contact"}

SDP_ANSWER = (
    b"v=0\r\no=psap 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


@dataclass(frozen=True, slots=True)
class SipMessage:
    """A received SIP message, split just enough for assertions."""

    start: str
    headers: tuple[tuple[str, str], ...]
    """(lower-case full name, value) in order."""
    body: bytes
    raw: bytes
    at: float
    """Arrival, time.monotonic() seconds."""

    @classmethod
    def parse(cls, data: bytes, at: float) -> SipMessage:
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "backslashreplace").split("\r\n")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            headers.append((_COMPACT.get(key, key), value.strip()))
        return cls(start=lines[0], headers=tuple(headers), body=body, raw=data, at=at)

    @property
    def method(self) -> str:
        return self.start.split(" ", 1)[0]

    @property
    def request_uri(self) -> str:
        return self.start.split(" ")[1]

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    def get(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None


class PsapUas(asyncio.DatagramProtocol):
    """A UDP user agent server standing in for an emergency centre.

    Args:
        name: for messages.
        mode: "answer", "ring" (180 Ringing before the 200), "503" or "silent".
        host: the loopback address to listen on (centres: :data:`CENTRE_HOST`).
    """

    def __init__(self, name: str, mode: str = "answer", host: str = "127.0.0.1") -> None:
        self.name = name
        self.mode = mode
        self.host = host
        self.port = free_port(host)
        self.invites: list[SipMessage] = []
        self.acks: list[SipMessage] = []
        self.byes: list[SipMessage] = []
        self.invited = asyncio.Event()
        self._transport: asyncio.DatagramTransport | None = None
        self._seen: set[str] = set()
        self._closed = asyncio.Event()

    @property
    def uri(self) -> str:
        return f"sip:112@{self.host}:{self.port}"

    @property
    def contact_address(self) -> str:
        """host:port of the Contact of its 2xx: where it listens."""
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(self.host, self.port))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def aclose(self) -> None:
        """Closes and returns once the socket is closed, so that its port can be bound
        again at once: asyncio closes a transport's socket on the loop's next turn,
        and a SIPp started in between fails with "Address already in use"."""
        self.close()
        if self._transport is not None:
            await self._closed.wait()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed.set()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if not data.strip():
            return  # keep-alive CRLF (RFC 5626 section 3.5.1)
        msg = SipMessage.parse(data, time.monotonic())
        if msg.start.startswith("SIP/2.0"):
            return
        method = msg.method
        if method == "INVITE":
            key = (msg.get("via") or "") + (msg.get("call-id") or "")
            if key not in self._seen:
                self._seen.add(key)
                self.invites.append(msg)
                self.invited.set()
            if self.mode == "silent":
                return
            if self.mode == "503":
                self._respond(msg, addr, "503 Service Unavailable", tag=True)
                return
            self._respond(msg, addr, "100 Trying")
            if self.mode == "ring":
                self._respond(msg, addr, "180 Ringing", tag=True)
            self._respond(msg, addr, "200 OK", tag=True, body=SDP_ANSWER)
        elif method == "ACK":
            self.acks.append(msg)
        elif method == "BYE":
            self.byes.append(msg)
            self._respond(msg, addr, "200 OK")
        elif method == "CANCEL" or self.mode != "silent":
            self._respond(msg, addr, "200 OK")

    def _respond(
        self,
        request: SipMessage,
        addr: tuple[str | Any, int],
        status: str,
        *,
        tag: bool = False,
        body: bytes = b"",
    ) -> None:
        # RFC 3261 8.2.6.2: copy Via (all, in order), From, Call-ID, CSeq, To (plus
        # our tag); 12.1.1: copy Record-Route into a dialog-creating 2xx.
        lines = [f"SIP/2.0 {status}"]
        lines += [f"Via: {v}" for v in request.all("via")]
        lines.append(f"From: {request.get('from')}")
        to = request.get("to") or ""
        if tag and ";tag=" not in to:
            to += f";tag={self.name}-{abs(hash(request.get('call-id'))) % 10**8}"
        lines.append(f"To: {to}")
        lines.append(f"Call-ID: {request.get('call-id')}")
        lines.append(f"CSeq: {request.get('cseq')}")
        if status.startswith("200") and request.method == "INVITE":
            lines += [f"Record-Route: {v}" for v in request.all("record-route")]
            lines.append(f"Contact: <sip:psap@{self.contact_address}>")
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        assert self._transport is not None
        self._transport.sendto("\r\n".join(lines).encode() + b"\r\n\r\n" + body, addr)


@dataclass(slots=True, eq=False)
class Rig:
    """A running app and its peers."""

    app: App
    target: str
    """host:port of the gateway's UDP listener."""
    centres: dict[str, PsapUas]
    pbx: PsapUas
    ended: list[CallEnded] = field(default_factory=list)

    def ended_for(self, dialled_fragment: str) -> list[CallEnded]:
        return [e for e in self.ended if dialled_fragment in e.callee_dialled]


def demo_sites_with(ports: Mapping[str, int | tuple[str, int]]) -> str:
    """The demo sites file with each centre's URI moved to ``ports[centre]``.

    Args:
        ports: centre id -> (host, port), or a bare port on 127.0.0.1 (where SIPp and
            the other peers a test runs listen by default).
    """
    text = DEMO_SITES.read_text(encoding="utf-8")
    for centre, demo_port in DEMO_CENTRE_PORTS.items():
        where = ports[centre]
        host, port = where if isinstance(where, tuple) else ("127.0.0.1", where)
        text, count = re.subn(
            rf"sip:112@{re.escape(CENTRE_HOST)}:{demo_port}\b", f"sip:112@{host}:{port}", text
        )
        assert count == 1, f"centre {centre} not found in {DEMO_SITES}"
    return text


@contextlib.asynccontextmanager
async def emergency_rig(
    pg_dsn: str,
    state_dir: Path,
    *,
    policy: str = "route",
    max_calls: int = 5000,
    modes: Mapping[str, str] | None = None,
    centre_ports: Mapping[str, int | tuple[str, int]] | None = None,
    pbx_port: int | None = None,
    routing: Mapping[str, Any] | None = None,
    guard: Mapping[str, Any] | None = None,
    media: Mapping[str, Any] | None = None,
    transports: tuple[str, ...] = ("UDP",),
    centre_params: Mapping[str, str] | None = None,
    security_desk: str | None = None,
    sip: Mapping[str, Any] | None = None,
) -> AsyncIterator[Rig]:
    """Starts the app with routing data whose centres are Python peers.

    Args:
        pg_dsn: the test's database.
        state_dir: CDR spool directory parent.
        policy: ``[routing] nomadic_policy``.
        max_calls: ``[overload] max_calls``.
        modes: centre id -> PsapUas mode (default "answer").
        centre_ports: centre id -> port on 127.0.0.1, or (host, port), of a peer the
            test runs itself (a SIPp UAS); no Python peer is started for those. The
            Python peers listen on :data:`CENTRE_HOST`, the demo centres' address.
        pbx_port: port of the ordinary-call next hop run by the test (a SIPp UAS);
            a Python peer answers otherwise.
        routing: more ``[routing]`` keys.
        guard: ``[guard]`` keys (the per-source limits are on by default).
        media: a ``[media]`` section (the demo has one): announcements are then
            played and the media anchored, so the B leg carries the relay's SDP.
        transports: the gateway's listeners on 127.0.0.1 (the demo has UDP and TCP;
            with TCP a large INVITE to a UDP centre switches, RFC 3261 18.1.1).
        centre_params: centre id -> URI parameters appended to its SIP URI
            (";transport=udp").
        security_desk: Setera's security desk URI (a peer the test runs); the demo's
            127.0.70.1:5070, where nobody listens, when None.
        sip: more ``[sip]`` keys (``t1``: shorter transaction timers).
    """
    modes = dict(modes or {})
    external = dict(centre_ports or {})
    centres = {
        c: PsapUas(c, modes.get(c, "answer"), host=CENTRE_HOST)
        for c in DEMO_CENTRE_PORTS
        if c not in external
    }
    pbx = PsapUas("pbx")
    ports = {**{c: (p.host, p.port) for c, p in centres.items()}, **external}
    text = demo_sites_with(ports)
    for centre, params in (centre_params or {}).items():
        where = ports[centre]
        host, port = where if isinstance(where, tuple) else ("127.0.0.1", where)
        uri = f'"sip:112@{host}:{port}"'
        assert text.count(uri) == 1, uri
        text = text.replace(uri, f'"sip:112@{host}:{port}{params}"')
    if security_desk is not None:
        demo_desk = 'security_desk = "sip:desk@127.0.70.1:5070"'
        assert text.count(demo_desk) == 1, demo_desk
        text = text.replace(demo_desk, f'security_desk = "{security_desk}"')
    data = parse_sites(text, "toml")
    con = await asyncpg.connect(pg_dsn)
    try:
        await import_sites(con, data)
    finally:
        await con.close()
    pbx_uri = f"sip:127.0.0.1:{pbx_port or pbx.port}"
    doc = gateway_config(
        host="127.0.0.1",
        upstream=pbx_uri,
        transports=transports,
        gateway={"state_dir": str(state_dir), "instance": f"emerg-{uuid.uuid4().hex[:6]}"},
        database={"url": pg_dsn},
        cdr={"spool_dir": str(state_dir / "cdr-spool"), "batch_age": 0.05},
        routing={"default_next_hop": pbx_uri, "nomadic_policy": policy, **(routing or {})},
        overload={"max_calls": max_calls},
        sip=dict(sip or {}),
        guard=dict(guard or {}),
        **({"media": dict(media)} if media is not None else {}),
    )
    for peer in (*centres.values(), pbx):
        await peer.start()
    try:
        async with running_app(parse_config(doc)) as app:
            rig = Rig(app=app, target=sip_target(app.gateway, "UDP"), centres=centres, pbx=pbx)
            app.gateway.call_sinks.append(rig.ended.append)
            yield rig
    finally:
        for peer in (*centres.values(), pbx):
            peer.close()


def sip_ruri(user: str, rig: Rig, params: str = "") -> str:
    """``sip:<user>@<gateway>`` with optional URI parameters (";user=phone")."""
    return f"sip:{user}@{rig.target}{params}"


def sipp_keys(caller: str, ruri: str) -> list[str]:
    """SIPp ``-key`` arguments of the uac-emergency* scenarios."""
    return ["-key", "caller", caller, "-key", "ruri", ruri]


async def call(
    rig: Rig,
    caller: str,
    ruri: str,
    *,
    source: str = OFFICE_IP,
    scenario: str = "uac-emergency",
    sipp_timeout: float = 15.0,
) -> SippResult:
    """Places one call with SIPp and asserts the scenario's outcome."""
    result = await run_uac(
        scenario,
        rig.target,
        local_ip=source,
        timeout=sipp_timeout,
        extra_args=sipp_keys(caller, ruri),
    )
    assert result.ok, result.describe()
    return result


def assert_emergency_invite(invite: SipMessage, *, e164: str, civic: bool) -> dict[str, str]:
    """The headers and body a centre needs (RFC 6442, 3325, 4412/7135)."""
    assert invite.get("resource-priority") == "esnet.1"
    assert invite.get("p-asserted-identity") == f"<tel:{e164}>"
    geolocation = invite.get("geolocation") or ""
    assert geolocation.startswith("<cid:") and geolocation.endswith(">"), geolocation
    content_type = invite.get("content-type") or ""
    assert content_type.startswith("multipart/mixed"), content_type
    parts = split_multipart(content_type, invite.body)
    # Beside the SDP and the PIDF-LO only the RFC 7852 blocks (issue 14 item 4),
    # each referenced from a Call-Info and valid XML.
    extra = set(parts) - {"application/sdp", "application/pidf+xml"}
    assert {"application/sdp", "application/pidf+xml"} <= set(parts), list(parts)
    assert extra <= ADDITIONAL_DATA_TYPES, list(parts)
    blocks = additional_data_blocks(content_type, invite.body, invite.all("call-info"))
    assert len(blocks) == len(extra), list(parts)
    headers, pidf = parts["application/pidf+xml"]
    # RFC 6442 4.1 / RFC 2392: the cid: URI names the part's Content-ID.
    assert headers["content-id"] == "<" + geolocation[len("<cid:") : -1] + ">"
    assert parts["application/sdp"][1].startswith(b"v=0")
    return check_pidf(pidf, civic=civic)
