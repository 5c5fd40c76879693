"""Issue 13, defect 2: real SIP clients register, and call with authentication,
against ``voipgw run`` started as users start it.

The gateway is the installed console script run from a directory outside the
checkout (tests/ops/harness.py ``GatewayProcess``) on the demo configuration moved to
this test's ports (``prepare``), without a ``[registrar] algorithms`` line: the
clients meet the product's DEFAULT offer. The user is provisioned the documented
way, ``voipgw users set-password``, before the gateway starts.

Clients: baresip 1.0 (Debian), pyVoIP (test-only dependency), SIPp 3.6 with its own
digest-uri form (uac-register-auth.xml, uac-auth-call.xml) and linphonec (Debian
linphone-cli). A missing program FAILS the test (marker ``tool``), never skips it.
What each client answers to each offer is in gateway/registrar/config.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.deploy.tools import require
from tests.interop.sipp import SippUas, free_port, run_uac
from tests.ops.harness import (
    HOST,
    OFFICE_IP,
    REALM,
    GatewayProcess,
    prepare,
    remove_state,
    set_password,
    state_directory,
    wait_until,
)

pytestmark = [pytest.mark.interop, pytest.mark.postgres, pytest.mark.asyncio]

USER = "alice"
#: The password the SIPp scenarios carry (SIPp does not expand keywords inside
#: [authentication ...]).
PASSWORD = "s3cret"
#: An ordinary number the demo routes to the PBX (tests/ops/test_sigterm_drain.py).
ORDINARY = "0401234567"


@contextlib.asynccontextmanager
async def gateway(
    *, upstream: str | None = None, authenticate_calls: bool = False
) -> AsyncIterator[GatewayProcess]:
    """``voipgw run`` with the default digest algorithms and alice provisioned."""
    state = state_directory()
    try:
        setup = prepare(
            state,
            upstream=upstream or f"sip:{HOST}:{free_port(HOST)}",
            authenticate_calls=authenticate_calls,
        )
        assert "\nalgorithms" not in setup.config.read_text(encoding="utf-8")
        await set_password(setup.config, USER, PASSWORD)
        process = GatewayProcess(setup)
        await process.start()
        try:
            yield process
        finally:
            await process.stop()
            log = process.tail(1_000_000)
            # Whatever the clients sent, nothing may have become an internal error.
            assert "Traceback" not in log, log
            assert "Server Internal Error" not in log, log
    finally:
        remove_state(state)


async def registered(process: GatewayProcess, aor: str, limit: float = 15.0) -> str:
    """Waits for the registrar's line about a 200 for ``aor``; returns it."""

    async def lines() -> list[str]:
        return [
            line
            for line in process.tail(1_000_000).splitlines()
            if f"REGISTER {aor} from" in line and "binding(s)" in line
        ]

    found = await wait_until(f"a binding for {aor}", lines, bool, limit)
    return str(found[0])


# ---------------------------------------------------------------------- baresip


@pytest.mark.tool
async def test_baresip_registers_with_the_default_algorithms() -> None:
    baresip = require("baresip")
    workdir = Path(tempfile.mkdtemp(prefix="voipgw-baresip-"))
    async with gateway() as process:
        port = free_port(HOST)
        (workdir / "config").write_text(
            "\n".join(
                [
                    "poll_method epoll",
                    f"sip_listen {HOST}:{port}",
                    "sip_transports udp",
                    "audio_player aubridge,nil",
                    "audio_source aubridge,nil",
                    "audio_alert aubridge,nil",
                    f"net_interface {HOST}",
                    "module_path /usr/lib/baresip/modules",
                    "module g711.so",
                    "module aubridge.so",
                    "module_app account.so",
                    "module_app menu.so",
                ]
            )
            + "\n"
        )
        outbound = f"sip:{process.setup.target};transport=udp"
        (workdir / "accounts").write_text(
            f'<sip:{USER}@{REALM}>;auth_pass={PASSWORD};outbound="{outbound}";regint=600\n'
        )
        (workdir / "contacts").write_text("")
        log = (workdir / "baresip.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            baresip,
            "-f",
            str(workdir),
            "-t",
            "20",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            try:
                await registered(process, f"sip:{USER}@{REALM}")
            except AssertionError:
                raise AssertionError(
                    (workdir / "baresip.log").read_text(errors="replace")
                ) from None
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            await proc.wait()
            log.close()
            shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------- pyVoIP


async def test_pyvoip_registers() -> None:
    # pyVoIP answers MD5 without qop (RFC 2069 form), which the default accepts
    # (RFC 3261 22.4); it registers To: sip:alice@<the gateway's address>.
    from pyVoIP.VoIP import PhoneStatus, VoIPPhone

    async with gateway() as process:
        rtp = free_port(HOST)
        phone = VoIPPhone(
            HOST,
            process.setup.sip_port,
            USER,
            PASSWORD,
            myIP=HOST,
            sipPort=free_port(HOST),
            rtpPortLow=rtp,
            rtpPortHigh=rtp + 1,
        )
        try:
            await asyncio.to_thread(phone.start)
            await wait_until(
                "pyVoIP registered",
                lambda: asyncio.sleep(0, phone.get_status()),
                lambda status: status == PhoneStatus.REGISTERED,
                15,
            )
            await registered(process, f"sip:{USER}@{HOST}")
        finally:
            await asyncio.to_thread(phone.stop)


# ---------------------------------------------------------------------- SIPp


@pytest.mark.tool
@pytest.mark.sipp
async def test_sipp_registers_with_its_own_digest_uri() -> None:
    async with gateway() as process:
        result = await run_uac(
            "uac-register-auth",
            process.setup.target,
            timeout=15,
            extra_args=["-key", "domain", REALM],
        )
        assert result.ok, result.describe() + process.tail()
        await registered(process, f"sip:{USER}@{REALM}")


@pytest.mark.tool
@pytest.mark.sipp
async def test_sipp_authenticated_call_with_its_own_digest_uri() -> None:
    pbx = SippUas("uas-answer", host=HOST, timeout=60)
    async with pbx, gateway(upstream=pbx.uri, authenticate_calls=True) as process:
        # From an office phone: 127.0.0.1 is the trusted PBX, never challenged.
        result = await run_uac(
            "uac-auth-call",
            process.setup.target,
            local_ip=OFFICE_IP,
            service=ORDINARY,
            call_duration=0.5,
            timeout=20,
            extra_args=["-key", "domain", REALM],
        )
        assert result.ok, result.describe() + process.tail()
        log = process.tail(1_000_000)
        assert f"INVITE from {OFFICE_IP}" in log, log
        assert "no credentials (challenged)" in log, log
    assert pbx.result is not None
    assert pbx.result.successful_calls == 1, pbx.result.describe()


# ---------------------------------------------------------------------- linphonec


@pytest.mark.tool
async def test_linphonec_registers() -> None:
    linphonec = require("linphonec")
    home = Path(tempfile.mkdtemp(prefix="voipgw-linphone-"))
    (home / ".local" / "share" / "linphone").mkdir(parents=True)
    async with gateway() as process:
        rc = home / "linphonerc"
        rc.write_text(
            f"""[sip]
sip_port={free_port(HOST)}
sip_tcp_port=-1
default_proxy=0

[proxy_0]
reg_proxy=<sip:{process.setup.target};transport=udp>
reg_identity=sip:{USER}@{REALM}
reg_expires=600
reg_sendregister=1
publish=0

[auth_info_0]
username={USER}
passwd={PASSWORD}
realm={REALM}
domain={REALM}
"""
        )
        log = (home / "linphonec.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            linphonec,
            "-c",
            str(rc),
            stdin=asyncio.subprocess.PIPE,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "HOME": str(home)},
            start_new_session=True,
        )
        try:
            try:
                await registered(process, f"sip:{USER}@{REALM}", limit=20)
            except AssertionError:
                raise AssertionError((home / "linphonec.log").read_text(errors="replace")) from None
        finally:
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(b"quit\n")
                await proc.stdin.drain()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
            log.close()
            shutil.rmtree(home, ignore_errors=True)
