"""Issue 14, location sources end to end: SIPp callers through the running gateway to
answering centres (the rig's Python peers record every INVITE they receive).

* an unknown caller on an office LAN reaches the site's centre with its civic PIDF-LO
  and no callback identity;
* a softphone's own geodetic PIDF-LO (RFC 6442 by value) reaches the centre beside
  the network's location, in the configured precedence;
* a malformed or oversized device PIDF-LO is ignored: the call still connects, and
  ``voipgw_device_location_ignored_total`` counts why;
* a call from a subscriber's declared home-office network routes as office use of
  that address (the Tampere centre), the address marked declared.
"""

from __future__ import annotations

import csv
import email.parser
import email.policy
import io
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from cdr.export import itemize
from cdr.partitions import Month
from gateway.b2bua import CallEnded
from gateway.ops.metrics import Metrics
from gateway.service.server import observe_call
from tests.emergency.pidf_check import check_pidf
from tests.emergency.rig import (
    DEMO_CENTRE_PORTS,
    OFFICE_IP,
    VPN_IP,
    SipMessage,
    call,
    emergency_rig,
    sip_ruri,
)
from tests.interop.sipp import run_uac

pytestmark = [pytest.mark.sipp, pytest.mark.postgres, pytest.mark.asyncio]

HOME_IP = "127.0.60.9"
"""In alice's declared home office network (deploy/demo/sites.toml)."""

CIRCLE = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf"'
    ' xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10"'
    ' xmlns:gml="http://www.opengis.net/gml" xmlns:gs="http://www.opengis.net/pidflo/1.0"'
    ' entity="pres:bob@example.com"><tuple id="dev1"><status><gp:geopriv>'
    '<gp:location-info><gs:Circle srsName="urn:ogc:def:crs:EPSG::4326">'
    "<gml:pos>60.16952 24.93545</gml:pos>"
    '<gs:radius uom="urn:ogc:def:uom:EPSG::9001">15</gs:radius></gs:Circle>'
    "</gp:location-info><gp:usage-rules/><gp:method>GPS</gp:method></gp:geopriv></status>"
    "<timestamp>2026-01-01T12:00:00Z</timestamp></tuple></presence>"
)


def pidf_parts(invite: SipMessage) -> tuple[list[str], list[bytes]]:
    """The Geolocation cid: references in order, and the PIDF-LO parts in body order,
    each checked to be the part its reference names."""
    geolocation = ",".join(invite.all("geolocation"))
    cids = [v.strip().removeprefix("<cid:").removesuffix(">") for v in geolocation.split(",")]
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {invite.get('content-type')}\r\n\r\n".encode() + invite.body
    )
    parts = [p for p in message.iter_parts() if p.get_content_type() == "application/pidf+xml"]
    ids = [str(p["Content-ID"]).strip("<>") for p in parts]
    assert ids == cids, (ids, cids)  # RFC 6442 4.1: each reference names its part, in order
    bodies = [p.get_payload(decode=True) for p in parts]
    return cids, [b for b in bodies if isinstance(b, bytes)]


async def device_call(
    rig: object, caller: str, source: str, pidf: str, routing: str | None = "yes"
) -> None:
    """One call of uac-emergency-device-pidf; ``routing``: the device's
    Geolocation-Routing value, or None for a device that sends no such header."""
    georouting = f"Geolocation-Routing: {routing}" if routing else "X-No-Geolocation-Routing: 1"
    result = await run_uac(
        "uac-emergency-device-pidf",
        rig.target,  # type: ignore[attr-defined]
        local_ip=source,
        timeout=15,
        extra_args=["-key", "caller", caller, "-key", "ruri", sip_ruri("112", rig),  # type: ignore[arg-type]
                    "-key", "pidf", pidf, "-key", "georouting", georouting],
    )  # fmt: skip
    assert result.ok, result.describe()


def ignored_count(ended: list[CallEnded], reason: str) -> float:
    """``voipgw_device_location_ignored_total{reason}`` after the gateway's own
    ``observe_call`` counted these calls (the rig runs without a metrics listener)."""
    metrics = Metrics(CollectorRegistry())
    for event in ended:
        observe_call(metrics, event)
    value = metrics.registry.get_sample_value(
        "voipgw_device_location_ignored_total", {"reason": reason}
    )
    return value or 0.0


async def test_unknown_caller_on_office_lan_reaches_the_sites_centre_with_its_address(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with emergency_rig(pg_dsn, tmp_path) as rig:
        await call(rig, "visitor", sip_ruri("112", rig), source=OFFICE_IP)
    [invite] = rig.centres["kerava"].invites
    assert not rig.centres["national"].invites
    assert invite.get("p-asserted-identity") is None  # no callback identity to assert
    cids, [pidf] = pidf_parts(invite)
    assert check_pidf(pidf, civic=True)["A3"] == "Espoo"
    assert b"no callback identity" in pidf
    [ended] = rig.ended
    assert ended.facts.call_class == "office" and ended.facts.site_id == "setera-espoo"
    assert ended.facts.callback is None and ended.facts.customer_id == "setera"


@pytest.mark.parametrize(
    ("source", "centre", "routing", "device_first"),
    [
        (OFFICE_IP, "kerava", {}, False),  # office default: network first
        (VPN_IP, "national", {}, True),  # nomadic default: device first
        (OFFICE_IP, "kerava", {"location": {"customers": {"setera": {"office": "device-first"}}}},
         True),
    ],
    ids=["office-network-first", "nomadic-device-first", "office-device-first-by-customer"],
)  # fmt: skip
async def test_device_geodetic_location_reaches_the_centre_beside_the_networks(
    pg_dsn: str,
    tmp_path: Path,
    source: str,
    centre: str,
    routing: dict[str, object],
    device_first: bool,
) -> None:
    async with emergency_rig(pg_dsn, tmp_path, routing=routing) as rig:
        await device_call(rig, "bob", source, CIRCLE)
    [invite] = rig.centres[centre].invites
    cids, pidfs = pidf_parts(invite)
    assert len(pidfs) == 2, invite.raw[:3000]
    device, network = (pidfs[0], pidfs[1]) if device_first else (pidfs[1], pidfs[0])
    assert device == CIRCLE.encode()  # forwarded as the device sent it
    check_pidf(network, civic=centre != "national")
    assert cids[0].startswith("dev-" if device_first else "loc-")
    [ended] = rig.ended
    assert ended.facts.device_location is not None
    assert ended.facts.device_location.summary == "circle 60.16952 24.93545 r=15 m"


@pytest.mark.parametrize(
    ("pidf", "reason"),
    [
        ("<presence xmlns='urn:ietf:params:xml:ns:pidf'><tuple", "not-xml"),
        (CIRCLE.replace("60.16952", "160.16952"), "bad-coordinates"),
        (CIRCLE.replace("<timestamp>", "<note>" + "x" * 3000 + "</note><timestamp>"), "too-large"),
    ],
    ids=["malformed", "latitude-out-of-range", "oversized"],
)
async def test_bad_device_location_is_ignored_and_counted_and_the_call_connects(
    pg_dsn: str, tmp_path: Path, pidf: str, reason: str
) -> None:
    routing = {"location": {"max_device_pidf_bytes": 2048}}
    async with emergency_rig(pg_dsn, tmp_path, routing=routing) as rig:
        await device_call(rig, "alice", OFFICE_IP, pidf)
    [invite] = rig.centres["kerava"].invites
    _, [pidf_sent] = pidf_parts(invite)  # only the network's
    assert check_pidf(pidf_sent, civic=True)["A3"] == "Espoo"
    assert ignored_count(rig.ended, reason) == 1
    [ended] = rig.ended
    assert ended.facts.device_location_ignored == reason


async def test_declared_home_office_routes_as_office_use_of_that_address(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with emergency_rig(pg_dsn, tmp_path, policy="announce-then-route") as rig:
        await call(rig, "alice", sip_ruri("112", rig), source=HOME_IP)
    [invite] = rig.centres["pori"].invites  # Tampere's centre, not Espoo's (Kerava)
    assert invite.get("p-asserted-identity") == "<tel:+358401000001>"
    assert (invite.get("x-voipgw-class") or "") == "office"
    _, [pidf] = pidf_parts(invite)
    assert check_pidf(pidf, civic=True)["A3"] == "Tampere"
    assert b"Declared address" in pidf
    [ended] = rig.ended
    assert ended.facts.location_source == "declared-address"


async def test_declared_network_is_not_office_for_another_subscriber(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with emergency_rig(pg_dsn, tmp_path) as rig:
        await call(rig, "bob", sip_ruri("112", rig), source=HOME_IP)
    assert rig.centres["national"].invites and not rig.centres["pori"].invites
    [ended] = rig.ended
    assert ended.facts.unverified_location == "outside"


@pytest.mark.parametrize(
    ("geolocation", "pidf", "reason"),
    [
        ("<cid:dev1@phone.example>", "<presence xmlns='urn:ietf:params:xml:ns:pidf'><tuple",
         "not-xml"),
        ("<cid:dev1@phone.example>", CIRCLE.replace("60.16952", "160.16952"), "bad-coordinates"),
        ("<cid:dev1@phone.example>",
         CIRCLE.replace("<timestamp>", "<note>" + "x" * 3000 + "</note><timestamp>"), "too-large"),
        ("<https://lis.example.com/loc/8f3a>", CIRCLE, "by-reference"),
        ("<cid:other@phone.example>", CIRCLE, "missing-part"),
    ],
    ids=["malformed", "invalid", "oversized", "by-reference", "missing-part"],
)  # fmt: skip
async def test_unusable_device_location_is_answered_with_geolocation_error(
    pg_dsn: str, tmp_path: Path, geolocation: str, pidf: str, reason: str
) -> None:
    """RFC 6442 4.3: the call connects, and the 180 and the 200 the caller gets carry
    Geolocation-Error 100 (the SIPp scenario fails without it)."""
    routing = {"location": {"max_device_pidf_bytes": 2048}}
    async with emergency_rig(pg_dsn, tmp_path, routing=routing, modes={"kerava": "ring"}) as rig:
        result = await run_uac(
            "uac-emergency-bad-device-pidf-expect-geolocation-error",
            rig.target,
            local_ip=OFFICE_IP,
            timeout=15,
            extra_args=["-key", "caller", "alice", "-key", "ruri", sip_ruri("112", rig),
                        "-key", "geolocation", geolocation, "-key", "pidf", pidf],
        )  # fmt: skip
        assert result.ok, result.describe()
    [invite] = rig.centres["kerava"].invites
    _, [pidf_sent] = pidf_parts(invite)  # only the network's went on
    assert check_pidf(pidf_sent, civic=True)["A3"] == "Espoo"
    [ended] = rig.ended
    assert ended.facts.device_location_ignored == reason
    assert ended.facts.geolocation_error == 100
    assert ended.final_status == 200


async def test_geolocation_error_rides_on_the_failure_final_too(
    pg_dsn: str, tmp_path: Path
) -> None:
    """No centre takes the call: the 500 the caller gets still says why its own
    location was not used."""
    modes = dict.fromkeys(DEMO_CENTRE_PORTS, "503")
    async with emergency_rig(pg_dsn, tmp_path, modes=modes) as rig:
        result = await run_uac(
            "uac-emergency-bad-device-pidf-expect-500-geolocation-error",
            rig.target,
            local_ip=OFFICE_IP,
            timeout=20,
            extra_args=["-key", "caller", "alice", "-key", "ruri", sip_ruri("112", rig),
                        "-key", "geolocation", "<cid:dev1@phone.example>",
                        "-key", "pidf", "<presence"],
        )  # fmt: skip
        assert result.ok, result.describe()
    [ended] = rig.ended
    assert ended.final_status == 500 and ended.facts.geolocation_error == 100


async def test_good_device_location_gets_no_geolocation_error(pg_dsn: str, tmp_path: Path) -> None:
    """A usable location: no Geolocation-Error, so the scenario that requires one
    fails on the 180 (its check bites), while the call itself was fine."""
    async with emergency_rig(pg_dsn, tmp_path, modes={"kerava": "ring"}) as rig:
        result = await run_uac(
            "uac-emergency-bad-device-pidf-expect-geolocation-error",
            rig.target,
            local_ip=OFFICE_IP,
            timeout=10,
            extra_args=["-key", "caller", "bob", "-key", "ruri", sip_ruri("112", rig),
                        "-key", "geolocation", "<cid:dev1@phone.example>", "-key", "pidf", CIRCLE],
        )  # fmt: skip
        assert not result.ok and result.successful_calls == 0, result.describe()
    [invite] = rig.centres["kerava"].invites
    assert len(pidf_parts(invite)[1]) == 2  # the device's location went on
    [ended] = rig.ended
    assert ended.facts.geolocation_error is None and ended.facts.device_location is not None


@pytest.mark.parametrize(
    ("routing", "sent"), [("yes", "yes"), ("no", "no"), (None, "no")], ids=["yes", "no", "absent"]
)
async def test_geolocation_routing_no_keeps_the_device_location_from_leading(
    pg_dsn: str, tmp_path: Path, routing: str | None, sent: str
) -> None:
    """RFC 6442 4.2: a nomadic call (device-first by default) from a device that did
    not say "yes": its location still reaches the centre, second, and the centre
    gets the device's "no"; with "yes" it goes first."""
    async with emergency_rig(pg_dsn, tmp_path) as rig:
        await device_call(rig, "bob", VPN_IP, CIRCLE, routing=routing)
    [invite] = rig.centres["national"].invites
    cids, pidfs = pidf_parts(invite)
    assert CIRCLE.encode() in pidfs
    assert cids[0].startswith("dev-" if routing == "yes" else "loc-")
    assert invite.all("geolocation-routing") == [sent]
    [ended] = rig.ended
    assert ended.facts.location_precedence == (
        "device-first" if routing == "yes" else "network-first"
    )


async def test_cdr_rows_record_the_location_source_and_the_callback_identity(
    pg_dsn: str, tmp_path: Path
) -> None:
    """Issue 14 in the CDR, from real calls through the gateway to PostgreSQL: (a) an
    unknown caller on an office LAN (site network, no callback identity), (b) a
    subscriber's office call, (c) a nomadic call whose only location is the device's
    own, (d) an ordinary call (neither column: NULL); and the invoice itemization
    export (``voipgw cdr itemize``) shows them."""
    async with emergency_rig(pg_dsn, tmp_path) as rig:
        await call(rig, "visitor", sip_ruri("112", rig), source=OFFICE_IP)
        await call(rig, "alice", sip_ruri("112", rig), source=OFFICE_IP)
        await device_call(rig, "bob", VPN_IP, CIRCLE)
        await call(rig, "alice", sip_ruri("0401234567", rig), source=OFFICE_IP)
    # Leaving the app flushes the CDR writer.
    con = await asyncpg.connect(pg_dsn)
    try:
        rows = await con.fetch(
            "SELECT caller, emergency, location_source::text AS source, callback_identity"
            " FROM cdr ORDER BY started_at"
        )
        out = io.StringIO()
        started = await con.fetchval("SELECT min(started_at) FROM cdr")
        await itemize(con, "setera", Month.of(started), out)
    finally:
        await con.close()
    got = [(r["emergency"], r["source"], r["callback_identity"]) for r in rows]
    assert got == [
        (True, "site-address", False),
        (True, "site-address", True),
        (True, "device", True),
        (False, None, None),
    ]
    assert rows[1]["caller"] == "+358401000001"
    lines = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["location_source"], r["callback_identity"]) for r in lines] == [
        ("site-address", "False"),
        ("site-address", "True"),
        ("device", "True"),
        ("", ""),
    ]
