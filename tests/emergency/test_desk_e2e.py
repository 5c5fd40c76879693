"""The security desk's SIP MESSAGE during an emergency call, through the running app
(issue 14 item 6): a SIPp ``uas-desk-message-*`` desk, SIPp callers, centres as peers.

The desk URI is Setera's ``security_desk`` in the routing data (the demo sites moved to
the test's desk). What the desk received is read from SIPp's ``-trace_msg`` file; the
scenario itself fails unless the body has the notice's lines. That the desk never holds
up the call is shown by order, not by time: the call is answered and ended while the
desk has not answered yet (late) or never answers.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import dns.asyncresolver
import pytest

from gateway.service import server as server_module
from gateway.service.desk import DeskOutcome
from gateway.transport.resolver import SipResolver
from tests.emergency.rig import VPN_IP, Rig, call, emergency_rig, sip_ruri
from tests.interop.sipp import SippUas
from tests.transport.test_resolver import DnsServer

pytestmark = [pytest.mark.sipp, pytest.mark.postgres, pytest.mark.asyncio]


def desk(scenario: str, trace: Path, *, answer_after: float = 0.0) -> SippUas:
    return SippUas(
        scenario,
        calls=1,
        timeout=60,
        call_duration=answer_after,
        extra_args=["-trace_msg", "-message_file", str(trace)],
    )


def received_messages(trace: Path) -> list[str]:
    """The MESSAGE requests in a SIPp -trace_msg file, each as text."""
    text = trace.read_text(encoding="utf-8", errors="replace")
    return [m.group(0) for m in re.finditer(r"MESSAGE sip:.*?(?=\n-{5,}|\Z)", text, re.S)]


def body_of(message: str) -> str:
    return re.split(r"\r?\n\r?\n", message, maxsplit=1)[1].replace("\r\n", "\n")


async def outcome(rig: Rig, wanted: DeskOutcome, limit: float = 40.0) -> None:
    desk_sender = rig.app.desk
    assert desk_sender is not None
    async with asyncio.timeout(limit):
        while desk_sender.outcomes[wanted] == 0:  # noqa: ASYNC110 (counted by the gateway)
            await asyncio.sleep(0.05)


async def test_office_call_desk_receives_who_where_and_callback(
    pg_dsn: str, tmp_path: Path
) -> None:
    trace = tmp_path / "desk-messages.log"
    async with (
        desk("uas-desk-message-200", trace) as uas,
        emergency_rig(pg_dsn, tmp_path, security_desk=f"sip:desk@{uas.target}") as rig,
    ):
        await call(rig, "alice", sip_ruri("112", rig, ";user=phone"))
        await outcome(rig, DeskOutcome.DELIVERED)
        result = await uas.wait(10)
    assert result.successful_calls == 1, result.describe()  # its body checks passed
    assert len(rig.centres["kerava"].invites) == 1
    (message,) = received_messages(trace)
    assert message.startswith(f"MESSAGE sip:desk@{uas.target} SIP/2.0")
    assert re.search(r"(?im)^Content-Type: text/plain;charset=UTF-8$", message)
    assert not re.search(r"(?im)^Contact:", message)
    call_id = rig.ended[0].call_id
    # In Setera's language, Finnish (deploy/demo/sites.toml).
    assert body_of(message).splitlines()[:7] == [
        "HÄTÄPUHELU 112",
        "Soittaja: Alice (desk phone), +358401000001 (SIP-käyttäjä alice)",
        "Asiakas: Setera Communications Oy",
        "Sijainti: Setera head office, Espoo (setera-espoo), Metsänneidonkuja 12, 02130 Espoo, FI",
        "Takaisinsoitto: +358401000001",
        "Hätäkeskus: kerava",
        body_of(message).splitlines()[6],
    ]
    assert re.fullmatch(r"Aika: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body_of(message).splitlines()[6])
    assert body_of(message).splitlines()[7] == f"Call-ID: {call_id}"
    assert rig.app.desk is not None
    assert rig.app.desk.outcomes[DeskOutcome.DELIVERED] == 1


async def test_nomadic_call_desk_told_location_not_verified(pg_dsn: str, tmp_path: Path) -> None:
    trace = tmp_path / "desk-messages.log"
    async with (
        desk("uas-desk-message-200", trace) as uas,
        emergency_rig(pg_dsn, tmp_path, security_desk=f"sip:desk@{uas.target}") as rig,
    ):
        await call(rig, "bob", sip_ruri("112", rig), source=VPN_IP)
        await outcome(rig, DeskOutcome.DELIVERED)
        result = await uas.wait(10)
    assert result.successful_calls == 1, result.describe()
    (message,) = received_messages(trace)
    lines = body_of(message).splitlines()
    assert "Soittaja: Bob (softphone), +358401000002 (SIP-käyttäjä bob)" in lines
    assert "Sijainti: sijaintia ei ole varmennettu (etäkäyttö)" in lines
    assert "Takaisinsoitto: +358401000002" in lines
    assert not any("Metsänneidonkuja" in line for line in lines)


async def test_late_desk_does_not_hold_up_the_call(pg_dsn: str, tmp_path: Path) -> None:
    """The desk answers 6 s after the MESSAGE: by then the call was answered and
    ended; the 200 is still matched to its transaction and counted."""
    trace = tmp_path / "desk-messages.log"
    async with (
        desk("uas-desk-message-200", trace, answer_after=6.0) as uas,
        emergency_rig(pg_dsn, tmp_path, security_desk=f"sip:desk@{uas.target}") as rig,
    ):
        await call(rig, "alice", sip_ruri("112", rig))
        assert rig.app.desk is not None
        # The call is over (ended when the caller's BYE came) and the desk has not
        # answered yet.
        assert [e.disposition for e in rig.ended] == ["answered"]
        assert rig.app.desk.queued == 1
        assert rig.app.desk.outcomes[DeskOutcome.DELIVERED] == 0
        await outcome(rig, DeskOutcome.DELIVERED)
        result = await uas.wait(10)
    assert result.successful_calls == 1, result.describe()
    assert rig.ended[0].disposition == "answered"


async def test_silent_desk_times_out_and_the_call_is_unchanged(pg_dsn: str, tmp_path: Path) -> None:
    """The desk never answers: the call connects and ends as ever; Timer F (64*T1,
    T1 = 0.1 s here) ends the MESSAGE's transaction, counted as a timeout."""
    trace = tmp_path / "desk-messages.log"
    async with (
        desk("uas-desk-message-no-response", trace, answer_after=10.0) as uas,
        emergency_rig(
            pg_dsn, tmp_path, security_desk=f"sip:desk@{uas.target}", sip={"t1": 0.1}
        ) as rig,
    ):
        await call(rig, "alice", sip_ruri("112", rig))
        assert rig.app.desk is not None
        assert [e.disposition for e in rig.ended] == ["answered"]
        assert rig.app.desk.queued == 1
        assert rig.app.desk.outcomes[DeskOutcome.TIMEOUT] == 0
        await outcome(rig, DeskOutcome.TIMEOUT)
        await uas.wait(15)
    assert rig.app.desk.outcomes[DeskOutcome.DELIVERED] == 0
    assert rig.ended[0].disposition == "answered"
    assert rig.ended[0].facts.centres[0] == "kerava"
    # Retransmitted (Timer E) until Timer F: the desk saw the same MESSAGE again.
    assert len(received_messages(trace)) > 1


async def test_customer_without_desk_sends_nothing(pg_dsn: str, tmp_path: Path) -> None:
    """Esimerkki Oy has no security_desk: no MESSAGE, nothing counted."""
    async with emergency_rig(pg_dsn, tmp_path) as rig:
        await call(rig, "frank", sip_ruri("112", rig), source="127.0.40.5")
        assert rig.app.desk is not None
        # The hook queues at routing, before the call goes on: nothing was queued.
        assert rig.app.desk.queued == 0
        await call(rig, "alice", sip_ruri("112", rig))
        assert rig.app.desk.queued == 1


async def test_silent_first_desk_host_fails_over_to_the_second(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The desk URI names a domain (sip:desk@desk.test) whose SRV records (RFC 3263,
    a real DNS server on loopback, dnspython through the gateway's own resolver) list
    a silent desk host first and a working one second: the second receives the notice
    after ATTEMPT_TIMEOUT, the call having gone on regardless."""
    silent_trace, live_trace = tmp_path / "silent.log", tmp_path / "live.log"
    silent = desk("uas-desk-message-no-response", silent_trace, answer_after=20.0)
    live = desk("uas-desk-message-200", live_trace)
    zone = {
        ("_sip._udp.desk.test.", "SRV"): [
            f"10 0 {silent.port} silent.desk.test.",
            f"20 0 {live.port} live.desk.test.",
        ],
        ("silent.desk.test.", "A"): ["127.0.0.1"],
        ("live.desk.test.", "A"): ["127.0.0.1"],
    }
    loop = asyncio.get_running_loop()
    dns_server = DnsServer(zone)
    transport, _ = await loop.create_datagram_endpoint(
        lambda: dns_server, local_addr=("127.0.0.1", 0)
    )
    stub = dns.asyncresolver.Resolver(configure=False)
    stub.nameservers = ["127.0.0.1"]
    stub.port = transport.get_extra_info("sockname")[1]
    monkeypatch.setattr(server_module, "_RESOLVER", SipResolver(stub))
    try:
        async with (
            silent,
            live,
            emergency_rig(pg_dsn, tmp_path, security_desk="sip:desk@desk.test") as rig,
        ):
            await call(rig, "alice", sip_ruri("112", rig))
            assert [e.disposition for e in rig.ended] == ["answered"]
            await outcome(rig, DeskOutcome.DELIVERED, limit=20.0)
            result = await live.wait(10)
    finally:
        transport.close()
    assert result.successful_calls == 1, result.describe()
    assert len(received_messages(silent_trace)) >= 1  # it was tried first
    (message,) = received_messages(live_trace)
    assert body_of(message).startswith("HÄTÄPUHELU 112\n")
    assert ("_sip._udp.desk.test.", "SRV") in dns_server.queries
    assert rig.app.desk is not None
    assert rig.app.desk.outcomes[DeskOutcome.DELIVERED] == 1
    assert sum(rig.app.desk.outcomes.values()) == 1
