"""Issue 14 item 6 ("What it must show" 2): a real phone calls 112 through
``voipgw run`` and a second real client, the customer's security desk, receives the
SIP MESSAGE; its log shows the text.

* The gateway: the installed ``voipgw run`` on the demo configuration moved to this
  test's ports (tests/ops/harness.py), Setera's ``security_desk`` moved to the desk.
* The caller: baresip 1.0 as alice in Setera's Espoo office LAN (127.0.10.5: an
  office call), dialling ``sip:112@gateway``; the Kerava centre is a SIPp UAS.
* The desk: baresip 1.0 configured as deploy/demo/baresip/desk (menu + stdio modules:
  it answers 200 and prints each MESSAGE), on 127.0.70.1 at a free port.

A missing baresip or SIPp fails the test (marker ``tool``), never skips it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.deploy.tools import require
from tests.interop.sipp import SippUas, free_port
from tests.media.harness import Baresip, even_free_port, write_tone
from tests.ops.harness import (
    HOST,
    OFFICE_IP,
    GatewayProcess,
    prepare,
    remove_state,
    state_directory,
    wait_until,
)

pytestmark = [
    pytest.mark.interop,
    pytest.mark.sipp,
    pytest.mark.tool,
    pytest.mark.postgres,
    pytest.mark.asyncio,
]

DESK_HOST = "127.0.70.1"
DEMO_DESK = Path(__file__).parents[2] / "deploy" / "demo" / "baresip" / "desk"


class OfficePhone(Baresip):
    """The harness's baresip, moved into the office LAN and calling as alice."""

    def configure(self) -> None:
        Baresip.configure(self)
        config = self.workdir / "config"
        config.write_text(config.read_text().replace(HOST, OFFICE_IP))
        (self.workdir / "accounts").write_text(
            f"<sip:alice@{OFFICE_IP}:{self.sip_port};transport=udp>;regint=0;"
            "audio_codecs=PCMU,PCMA\n"
        )


@contextlib.asynccontextmanager
async def desk_client(port: int):  # type: ignore[no-untyped-def]
    """baresip as the demo's security desk, on DESK_HOST:port; yields its log path."""
    baresip = require("baresip")
    home = Path(tempfile.mkdtemp(prefix="voipgw-desk-"))
    config = (DEMO_DESK / "config").read_text().replace("127.0.70.1:5070", f"{DESK_HOST}:{port}")
    (home / "config").write_text(config)
    (home / "accounts").write_text(f"<sip:desk@{DESK_HOST}:{port};transport=udp>;regint=0\n")
    (home / "contacts").write_text("")
    log_path = home / "desk.log"
    log = log_path.open("wb")
    # stdin stays open: the stdio module (which prints the messages) reads it.
    proc = await asyncio.create_subprocess_exec(
        baresip,
        "-f",
        str(home),
        stdin=asyncio.subprocess.PIPE,
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "HOME": str(home)},
        start_new_session=True,
    )
    try:

        async def text() -> str:
            return log_path.read_text(errors="replace")

        await wait_until("the desk's baresip", text, lambda t: "baresip is ready" in t, 15)
        yield log_path
    finally:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(b"q")
            await proc.stdin.drain()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


async def test_baresip_desk_receives_the_message_while_baresip_calls_112(tmp_path: Path) -> None:
    state = state_directory()
    centre = SippUas("uas-answer", host=HOST, transport="udp", timeout=90,
                     extra_args=["-mp", str(even_free_port())])  # fmt: skip
    desk_port = free_port(DESK_HOST)
    try:
        setup = prepare(
            state, upstream=f"sip:{HOST}:{free_port(HOST)}", centre_ports={"kerava": centre.port}
        )
        sites = state / "sites.toml"
        demo_desk = 'security_desk = "sip:desk@127.0.70.1:5070"'
        text = sites.read_text(encoding="utf-8")
        assert text.count(demo_desk) == 1
        sites.write_text(
            text.replace(demo_desk, f'security_desk = "sip:desk@{DESK_HOST}:{desk_port}"'),
            encoding="utf-8",
        )
        tone = tmp_path / "caller.wav"
        write_tone(tone, 440.0, 10.0)
        phone = OfficePhone(source=tone)
        process = GatewayProcess(setup)
        async with centre, desk_client(desk_port) as desk_log:
            await process.start()
            try:
                await phone.dial(f"sip:112@{setup.target}", quit_after=6)

                async def desk_text() -> str:
                    return desk_log.read_text(errors="replace")

                shown = await wait_until(
                    "the MESSAGE in the desk's log",
                    desk_text,
                    lambda t: "Call-ID:" in t,
                    20,
                )
                await phone.wait(20)
                delivered = await wait_until(
                    "the gateway's log line of the delivery",
                    lambda: _async(process.tail(1_000_000)),
                    lambda t: "security desk" in t and "delivered" in t,
                    10,
                )
            finally:
                await phone.stop()
                await process.stop()
                phone_log = phone.log_text()
                phone.cleanup()
        gateway_log = process.tail(1_000_000)
    finally:
        remove_state(state)
    print(shown)  # the desk's own log, for the report (pytest -s)
    assert "Traceback" not in gateway_log, gateway_log
    # What the desk's baresip printed: the sender, then the text in quotes.
    # In Setera's language, Finnish (deploy/demo/sites.toml).
    assert re.search(rf'sip:voipgw@{re.escape(HOST)}:\d+: "HÄTÄPUHELU 112', shown), shown
    for line in (
        "Soittaja: Alice (desk phone), +358401000001 (SIP-käyttäjä alice)",
        "Asiakas: Setera Communications Oy",
        "Sijainti: Setera head office, Espoo (setera-espoo), Metsänneidonkuja 12, 02130 Espoo, FI",
        "Takaisinsoitto: +358401000001",
        "Hätäkeskus: kerava",
    ):
        assert line in shown, shown
    assert re.search(r"security desk sip:desk@\S+: delivered \(200 OK\)", delivered), delivered
    # The call itself reached the Kerava centre and was answered.
    assert "call to sip:112" in phone_log or "Call established" in phone_log, phone_log
    assert centre.result is not None and centre.result.successful_calls >= 1, (
        centre.result.describe() if centre.result else None
    )


async def _async(value: str) -> str:
    return value
