"""README "First calls", end to end: ``voipgw demo`` with the shipped baresip phones.

``voipgw demo`` is started as a user starts it: the installed console script, from a
directory outside the checkout, on the demo configuration moved to this test's ports
and state directory (tests/ops/harness.py ``gateway_toml``). The phones are the
shipped deploy/demo/baresip configurations, rewritten only for ports and paths.

The registrar offers its default digest algorithms (as the demo does) and calls are
authenticated (407), as in the demo.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from gateway.demo.cli import CENTRE_TONE, PBX_TONE
from routing.sites_file import parse_sites
from tests.demo.phones import ShippedPhone
from tests.interop.sipp import free_port
from tests.media.harness import find_baresip, rms, tone_level
from tests.ops.harness import (
    HOST,
    GatewayProcess,
    prepare,
    remove_state,
    state_directory,
    voipgw,
    wait_until,
)

pytestmark = [pytest.mark.tool, pytest.mark.interop, pytest.mark.asyncio]

ALICE = "+358401000001"
RECORDED_LINE = "+358201234567"
#: The nomadic warning lasts about 10 s; the centre must not be called before most of it.
WARNING_SECONDS = 8.0


def centre_lines(log: str, centre: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith(f"centre {centre} (")]


async def call(phone: ShippedPhone, number: str, *, talk: float, limit: float) -> float:
    """Dials, waits for the answer, talks ``talk`` s and hangs up; returns the
    seconds from dial to answer."""
    after = len(phone.events)
    started = time.monotonic()
    response = await phone.command("dial", number)
    assert response.get("ok"), response
    established = await phone.event("CALL_ESTABLISHED", limit, after=after)
    await asyncio.sleep(talk)
    await phone.command("hangup")
    await phone.event("CALL_CLOSED", 10, after=after)
    return float(established["at"]) - started


async def test_first_calls_with_the_shipped_phones(tmp_path: Path) -> None:
    find_baresip()  # fails, not skips, without baresip
    state = state_directory()
    setup = prepare(
        state,
        upstream=f"sip:{HOST}:{free_port(HOST)}",
        authenticate_calls=True,
    )
    centres = {c.id: c for c in parse_sites((state / "sites.toml").read_text(), "toml").centres}
    demo = GatewayProcess(setup, log_name="demo.log", command="demo")
    phones: list[ShippedPhone] = []
    try:
        await demo.start()
        assert "What to try" in demo.tail(20000), demo.tail()
        for centre in centres.values():
            assert centre.sip_uri.split("@", 1)[1] in demo.tail(20000), centre.sip_uri

        office = ShippedPhone("office", tmp_path, setup.sip_port)
        nomadic = ShippedPhone("nomadic", tmp_path, setup.sip_port)
        phones += [office, nomadic]
        for phone in phones:
            await phone.start()
            await phone.registered(15)
        await wait_until(
            "two registered bindings",
            lambda: demo.metric("voipgw_registered_bindings"),
            lambda value: value >= 2,
            10,
        )

        # Office 112: the centre serving the office's registered address (Espoo).
        await call(office, "112", talk=2.0, limit=20)
        kerava = centre_lines(demo.tail(50000), "kerava")
        assert len(kerava) == 1, demo.tail()
        assert f"callback <tel:{ALICE}>" in kerava[0], kerava
        assert "Resource-Priority esnet.1" in kerava[0], kerava
        assert "Geolocation <cid:" in kerava[0], kerava
        assert "class office" in kerava[0], kerava
        assert "location: Metsänneidonkuja 12, 02130 Espoo" in kerava[0], kerava

        # Nomadic 112: the spoken warning first (early media), then the national
        # default, with the location not verified.
        answer_after = await call(nomadic, "112", talk=1.0, limit=40)
        national = centre_lines(demo.tail(50000), "national")
        assert len(national) == 1, demo.tail()
        assert "callback <tel:+358401000002>" in national[0], national
        assert "class nomadic" in national[0], national
        assert "Geolocation <cid:" in national[0], national
        assert "location: not verified" in national[0], national
        assert answer_after >= WARNING_SECONDS, f"centre answered {answer_after:.1f}s after dial"
        warning = nomadic.heard()
        assert warning and rms(warning[0]) > 0.01, "the nomadic phone heard no warning"

        # The recorded line: the notice, then the PBX stand-in answers and beeps.
        before = len(office.heard())
        await call(office, RECORDED_LINE, talk=3.0, limit=20)
        pbx = [line for line in demo.tail(50000).splitlines() if line.startswith("pbx: call to")]
        assert len(pbx) == 1, demo.tail()
        assert "recording notice played" in pbx[0], pbx
        assert f"<tel:{ALICE}>" in pbx[0], pbx
        heard = office.heard()[before:]
        assert heard, "the office phone recorded nothing of the recorded-line call"
        audio = np.concatenate(heard)
        assert rms(audio) > 0.01, "silence"
        # The PBX's beeps (not the centres' pitch) are in what the phone heard last.
        assert tone_level(heard[-1], PBX_TONE.frequency) > 0.2
        assert tone_level(heard[-1], CENTRE_TONE.frequency) < 0.05

        # README: voipgw status, voipgw cdr subject-access.
        # The shared runner fails the test unless the command exits 0.
        status = await voipgw("status", "--url", f"http://{HOST}:{setup.metrics_port}", cwd=state)
        assert "emergency calls" in status, status

        async def records() -> str:
            args = ("cdr", "subject-access", "--number", ALICE, "--config", str(setup.config))
            return await voipgw(*args, cwd=state)

        rows = await wait_until(
            "alice's two calls in subject-access",
            records,
            lambda text: text.count(ALICE) >= 2 and RECORDED_LINE in text,
            30,
        )
        assert "112" in rows, rows
    finally:
        for phone in phones:
            await phone.stop()
        status_code = await demo.stop()
        remove_state(state)
    assert status_code == 0, demo.tail()
