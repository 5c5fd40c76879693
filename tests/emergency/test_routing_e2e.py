"""Emergency calls through the running app: SIPp callers, centres as test peers.

The rule under test is the delivery terms' IMPORTANT NOTICE: calls from the
registered office address go to the nearest centre with that address as PIDF-LO;
nomadic calls are NOT routed to the nearest centre (policy decides); and emergency
calls are never blocked (barred customers, overload).
"""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gateway.service.notify import EmergencyNotifier, NotifyConfig
from routing.configfields import Table
from tests.emergency.pidf_check import NS, split_multipart
from tests.emergency.rig import assert_emergency_invite, call, emergency_rig, sip_ruri
from tests.interop.sipp import SippUas, free_port

pytestmark = [pytest.mark.sipp, pytest.mark.postgres, pytest.mark.asyncio]


async def test_office_call_reaches_espoo_centre_with_pidf_lo(pg_dsn: str, tmp_path: Path) -> None:
    async with emergency_rig(pg_dsn, tmp_path) as rig:
        await call(rig, "alice", sip_ruri("112", rig, ";user=phone"))
    kerava = rig.centres["kerava"]
    assert len(kerava.invites) == 1
    others = [c for c, peer in rig.centres.items() if peer.invites and c != "kerava"]
    assert others == []
    civic = assert_emergency_invite(kerava.invites[0], e164="+358401000001", civic=True)
    assert civic["country"] == "FI"
    assert civic["A1"] == "Uusimaa"
    assert civic["A3"] == "Espoo"
    assert civic["RD"] == "Metsänneidonkuja"
    assert civic["HNO"] == "12"
    assert civic["PC"] == "02130"
    assert kerava.invites[0].get("x-voipgw-class") == "office"
    assert len(kerava.acks) == 1 and len(kerava.byes) == 1


async def test_pidf_lo_names_the_provider(pg_dsn: str, tmp_path: Path) -> None:
    """RFC 4119 2.2.4 provided-by with RFC 7852 ProviderInfo: the operator as data provider.

    FAILS today: gateway/service/router.py ``_with_location`` calls ``build_pidf``
    without ``provider=self.config.provider``, so ``[routing.provider]`` is never sent.
    """
    async with emergency_rig(pg_dsn, tmp_path) as rig:
        await call(rig, "alice", sip_ruri("112", rig))
    invite = rig.centres["kerava"].invites[0]
    parts = split_multipart(invite.get("content-type") or "", invite.body)
    root = ET.fromstring(parts["application/pidf+xml"][1])
    provided_by = root.find("pidf:tuple/pidf:status/gp:geopriv/gp:provided-by", NS)
    assert provided_by is not None, "no gp:provided-by in the PIDF-LO"
    text = ET.tostring(provided_by, encoding="unicode")
    assert "Setera Communications Oy" in text
    assert "setera.fi" in text


async def test_real_sipp_centre_accepts_the_emergency_invite(pg_dsn: str, tmp_path: Path) -> None:
    # uas-psap-answer.xml fails the call unless Resource-Priority, a tel: PAI, a
    # Geolocation cid: and a multipart body with a civic PIDF-LO are present.
    log = tmp_path / "kerava-messages.log"
    port = free_port("127.0.0.1")
    uas = SippUas(
        "uas-psap-answer",
        port=port,
        timeout=30,
        extra_args=["-trace_msg", "-message_file", str(log)],
    )
    async with uas, emergency_rig(pg_dsn, tmp_path, centre_ports={"kerava": port}) as rig:
        for _ in range(3):
            await call(rig, "alice", sip_ruri("112", rig))
    assert uas.result is not None
    assert uas.result.successful_calls == 3, uas.result.describe()
    assert uas.result.failed_calls == 0, uas.result.describe()
    text = log.read_text(errors="replace")
    assert text.count("INVITE sip:112@127.0.0.1") == 3
    assert "Resource-Priority: esnet.1" in text
    assert "<ca:A3>Espoo</ca:A3>" in text


async def test_office_call_notifies_the_webhook(pg_dsn: str, tmp_path: Path) -> None:
    bodies: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        length = int(next(h for h in lines if h.startswith(b"content-length")).split(b":")[1])
        bodies.append(await reader.readexactly(length))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/112"
    async with (
        server,
        emergency_rig(pg_dsn, tmp_path, routing={"notification_webhook": url}) as rig,
    ):
        # The global URL comes from [routing] notification_webhook.
        routing = rig.app.config.routing
        assert routing is not None
        notifier_config = NotifyConfig.from_table(Table({}, "notify"), routing=routing)
        async with EmergencyNotifier(notifier_config) as notifier:
            # gateway/service/app.py does not wire the notifier yet; the router's hook is public.
            rig.app.gateway.router.notify = notifier  # type: ignore[attr-defined]
            await call(rig, "alice", sip_ruri("112", rig))
            await call(rig, "alice", sip_ruri("0401234567", rig))
        assert notifier.delivered == 1
    assert len(bodies) == 1
    doc = json.loads(bodies[0])
    assert doc["caller"] == "+358401000001"
    assert doc["site"] == "setera-espoo"
    assert doc["centre"] == "kerava"
    assert doc["civic_address"]["A3"] == "Espoo"
