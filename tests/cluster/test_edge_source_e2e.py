"""Issue 16: an emergency call and its callbacks through the Kamailio dispatcher.

Two ``voipgw run`` instances, A and B, share one PostgreSQL behind
deploy/cluster/kamailio.cfg; both name Kamailio in ``[sip] edge_proxies``. alice's
phone (SIPp, ``Supported: path``) registers through Kamailio from the office network
(OFFICE_IP) and dials 112 through Kamailio. Every request reaches an instance from
Kamailio's address, so the call is office only because the instance reads the
phone's address from the Via below Kamailio's (received/rport,
gateway/edge/device_source.py): the CDR row says office, source OFFICE_IP, centre
Kerava (the Espoo office's). The phone's NAT then lets in only Kamailio's address
(:class:`~tests.cluster.rig.NatPhone`), and Kerava calls alice's number back through
A, then through B: each callback INVITE reaches the phone from Kamailio (through the
binding's Path, marked as a callback), and the PBX gets no call.

Then the same phone (alice) dials 112 through Kamailio from an address outside every
site, with a forged ``received=OFFICE_IP`` in its own Via: Kamailio overwrites it
with the real source, and the call is nomadic (national centre), its CDR source the
real address.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from tests.cluster.rig import Kamailio, NatPhone, provision, start_instance
from tests.cluster.test_callback_flow_e2e import centre_calls_back, invited, window_centre

# register_through registers alice with test_path.PASSWORD.
from tests.cluster.test_path import PASSWORD, register_through
from tests.interop.sipp import SCENARIO_DIR, SippResult, SippUas, free_port, run_uac
from tests.ops.harness import HOST, OFFICE_IP, GatewayProcess, remove_state, wait_until
from tests.ops.harness import state_directory as new_state

pytestmark = [pytest.mark.sipp, pytest.mark.interop, pytest.mark.postgres, pytest.mark.asyncio]

#: Outside every network of deploy/demo/sites.toml: a nomadic caller's address.
OUTSIDE_IP = "127.0.99.9"


def behind_kamailio(kamailio_host: str) -> Callable[[str], str]:
    """The instances' configuration edit: Kamailio is their edge proxy."""

    def edit(text: str) -> str:
        return text.replace("[sip]\n", f'[sip]\nedge_proxies = ["{kamailio_host}/32"]\n', 1)

    return edit


def forged_via_scenario(directory: Path) -> Path:
    """uac-emergency.xml whose INVITE's Via claims ``received=OFFICE_IP;rport=5060``."""
    text = (SCENARIO_DIR / "uac-emergency.xml").read_text(encoding="utf-8")
    via = "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]"
    assert via in text
    forged = text.replace(
        via,
        f"Via: SIP/2.0/[transport] [local_ip]:[local_port];received={OFFICE_IP};rport=5060"
        ";branch=[branch]",
        1,
    )
    path = directory / "uac-emergency-forged-received.xml"
    path.write_text(forged, encoding="utf-8")
    return path


async def emergency_call_through(
    kamailio: Kamailio, host: str, port: int, scenario: str | Path = "uac-emergency"
) -> tuple[SippResult, float]:
    """alice dials 112 through Kamailio from ``host``:``port``."""
    started = time.monotonic()
    result = await run_uac(
        scenario,
        kamailio.target,
        local_ip=host,
        call_duration=0.3,
        timeout=30,
        extra_args=[
            *("-key", "caller", "alice", "-key", "ruri", f"sip:112@{kamailio.target}"),
            *("-p", str(port)),
        ],
    )
    return result, time.monotonic() - started


async def emergency_records(dsn: str) -> list[asyncpg.Record]:
    con = await asyncpg.connect(dsn)
    try:
        rows: list[asyncpg.Record] = await con.fetch(
            "SELECT call_class::text AS class, host(source_address) AS source,"
            " emergency_centre AS centre, gateway_instance AS instance"
            " FROM cdr WHERE emergency AND callee_dialled = '112' AND ended_by IS NOT NULL"
            " ORDER BY started_at"
        )
    finally:
        await con.close()
    return rows


@pytest.mark.timeout(300)
async def test_emergency_call_and_callbacks_through_kamailio(pg_dsn: str, tmp_path: Path) -> None:
    states = [new_state(), new_state()]
    gateways: list[GatewayProcess] = []
    phone: NatPhone | None = None
    try:
        async with SippUas("uas-answer", host=HOST, timeout=200) as pbx:
            kerava = SippUas("uas-psap-answer", host=HOST, timeout=200)
            national = SippUas("uas-psap-answer", host=HOST, timeout=200)
            kamailio_host = "127.0.0.2"
            for name, state in zip("ab", states, strict=True):
                gateways.append(
                    await start_instance(
                        name,
                        state,
                        upstream=pbx.uri,
                        dsn=pg_dsn,
                        edit=behind_kamailio(kamailio_host),
                        centre_ports={"kerava": kerava.port, "national": national.port},
                    )
                )
            a, b = gateways
            await provision(a, "alice", PASSWORD)
            instances = [f"{HOST}:{g.setup.sip_port}" for g in gateways]
            async with Kamailio(instances, host=kamailio_host) as kamailio:
                kamailio_address = (kamailio.host, kamailio.port)
                phone_port = free_port(OFFICE_IP)
                await register_through(
                    kamailio, phone_port, f"{OFFICE_IP}:{phone_port}", host=OFFICE_IP
                )

                # 112 from the office through Kamailio: office, Kerava.
                async with kerava:
                    office, office_in = await emergency_call_through(
                        kamailio, OFFICE_IP, phone_port
                    )
                    assert office.ok, office.describe() + a.tail() + b.tail() + kamailio.tail()
                await wait_until(
                    "the window of the ended call in PostgreSQL",
                    lambda: window_centre(pg_dsn),
                    lambda centre: centre == "kerava",
                    limit=20,
                )
                (record,) = await wait_until(
                    "the office call's CDR row",
                    lambda: emergency_records(pg_dsn),
                    lambda rows: len(rows) == 1,
                    limit=20,
                )
                assert (record["class"], record["source"], record["centre"]) == (
                    "office",
                    OFFICE_IP,
                    "kerava",
                ), dict(record)

                # Kerava calls back through A, then B: through Kamailio to the phone.
                phone = NatPhone("alice", phone_port, allowed=kamailio_address, host=OFFICE_IP)
                await phone.start()
                callbacks_in: list[float] = []
                for index, gateway in enumerate((a, b), start=1):
                    callback, took = await centre_calls_back(gateway.setup, kerava.port)
                    assert callback.ok, callback.describe() + gateway.tail() + kamailio.tail()
                    await invited(phone, index)
                    assert phone.invite_sources == [kamailio_address] * index
                    invite = phone.invites[index - 1]
                    assert invite.get("x-voipgw-class") == "emergency-callback"
                    callbacks_in.append(took)
                assert phone.dropped == [], phone.dropped
                phone.close()
                phone = None

                # The same phone from outside every site, with a forged received=.
                async with national:
                    nomadic, nomadic_in = await emergency_call_through(
                        kamailio,
                        OUTSIDE_IP,
                        free_port(OUTSIDE_IP),
                        forged_via_scenario(tmp_path),
                    )
                    assert nomadic.ok, nomadic.describe() + a.tail() + b.tail()
                rows = await wait_until(
                    "the nomadic call's CDR row",
                    lambda: emergency_records(pg_dsn),
                    lambda rows: len(rows) == 2,
                    limit=20,
                )
                assert (rows[1]["class"], rows[1]["source"], rows[1]["centre"]) == (
                    "nomadic",
                    OUTSIDE_IP,
                    "national",
                ), dict(rows[1])
                # The instances' log gives the reason with the proxy it came through.
                logs = a.tail(400_000) + b.tail(400_000)
                assert f"source {OFFICE_IP} (through edge proxy {kamailio_host})" in logs
                assert f"source {OUTSIDE_IP} (through edge proxy {kamailio_host})" in logs
        # The PBX stand-in has exited: no call reached it.
        assert pbx.result is not None
        assert pbx.result.incoming_calls == 0, pbx.result.describe()
        print(
            f"\n112 through Kamailio from the office: office/kerava in {office_in:.2f} s"
            f" (on {record['instance']}); Kerava's callback through A then B reached the"
            f" phone from Kamailio in {', '.join(f'{t:.2f}' for t in callbacks_in)} s;"
            f" forged received= from outside: nomadic/national in {nomadic_in:.2f} s"
            " (SIPp runs, call pause included)"
        )
    finally:
        if phone is not None:
            phone.close()
        for gateway in gateways:
            await gateway.stop()
        for state in states:
            remove_state(state)
