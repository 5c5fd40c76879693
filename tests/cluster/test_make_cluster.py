"""`make cluster` (deploy/cluster/run.py) starts PostgreSQL, both instances and
Kamailio, carries calls through the dispatcher, registers a phone through it with a
Path that calls then follow, and Ctrl-C stops it all."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import asyncpg
import pytest

from gateway.config import load_config
from tests.cluster.rig import NatPhone, kamailio_binary
from tests.interop.sipp import SippUas, free_port, run_uac
from tests.ops.harness import stop_embedded, voipgw

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.interop,
    pytest.mark.postgres,
    pytest.mark.tool,
    pytest.mark.asyncio,
]

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "cluster-bob-pw-16"
DIALLED = "+35891234567"


async def stop_everything(proc: asyncio.subprocess.Process, state: Path) -> None:
    """After a failure too: run.py is asked to stop (SIGTERM), then killed; what it
    started outside its process group (Kamailio's own session, the daemonized
    PostgreSQL) is stopped by pid file and pg_ctl. Only processes this test started."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    pid_file = state / "kamailio" / "kamailio.pid"
    with contextlib.suppress(OSError, ValueError):
        os.killpg(int(pid_file.read_text().split()[0]), signal.SIGKILL)  # its own session
    await asyncio.to_thread(stop_embedded, state / "pgdata")
    shutil.rmtree(state, ignore_errors=True)


async def binding_paths(config: Path, aor: str) -> list[list[str]]:
    """The Path column of ``aor``'s bindings in the cluster's shared database."""
    con = await asyncpg.connect(load_config(config).database.url)
    try:
        rows = await con.fetch("SELECT path FROM registrar_bindings WHERE aor = $1", aor)
    finally:
        await con.close()
    return [list(r["path"] or ()) for r in rows]


@pytest.mark.timeout(300)
async def test_make_cluster_carries_calls_and_stops_on_ctrl_c() -> None:
    kamailio_binary()  # fails, not skips, without it
    state = Path(tempfile.mkdtemp(prefix="voipgw-cluster-"))
    os.chmod(state, 0o755)  # as root the embedded server runs as another user
    env = {**os.environ, "VOIPGW_CLUSTER_STATE": str(state)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "deploy" / "cluster" / "run.py"),
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    output: list[str] = []
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(180):
            while not any("cluster ready" in line for line in output):
                line = await proc.stdout.readline()
                if not line:
                    raise AssertionError("run.py exited:\n" + "".join(output))
                output.append(line.decode())
        # Phones' calls are challenged (the demo's [registrar]): bob gets a password,
        # as deploy/OPERATIONS.md provisions phones, in the shared database.
        await voipgw(
            *("users", "set-password", "bob", "--realm", "voipgw.demo"),
            *("--password", PASSWORD, "--config", str(state / "voipgw-1.toml")),
            cwd=ROOT,
        )
        # The demo PBX address of deploy/cluster/voipgw-*.toml ([upstream] uri). The
        # retried INVITE may reach the other instance than the 407 came from: the
        # nonce is checked with the secret the instances share.
        async with SippUas("uas-answer", host="127.0.0.1", port=5080, timeout=60):
            result = await run_uac(
                "uac-call-auth",
                "127.0.0.2:5060",
                calls=6,
                rate=6,
                call_duration=0.2,
                timeout=30,
                extra_args=[
                    *("-key", "caller", "bob", "-key", "ruri", f"sip:{DIALLED}@127.0.0.2"),
                    *("-au", "bob", "-ap", PASSWORD, "-auth_uri", f"{DIALLED}@127.0.0.2"),
                ],
            )
        assert result.ok, result.describe()
        # A phone registers through Kamailio as deploy/OPERATIONS.md shows (the
        # scenario fails unless the 200 OK echoes the Path), and the PBX's call for
        # it at voipgw-2 reaches it from Kamailio.
        port = free_port("127.0.0.1")
        registered = await run_uac(
            "uac-register-path-echoed",
            "127.0.0.2:5060",
            service="bob",
            local_ip="127.0.0.1",
            timeout=10,
            extra_args=[
                *("-au", "bob", "-ap", PASSWORD, "-auth_uri", "voipgw.demo"),
                *("-set", "domain", "voipgw.demo", "-set", "expires", "600", "-p", str(port)),
                *("-set", "contact", f"127.0.0.1:{port}"),
            ],
        )
        assert registered.ok, registered.describe()
        paths = await binding_paths(state / "voipgw-1.toml", "sip:bob@voipgw.demo")
        assert len(paths) == 1 and "sip:127.0.0.2;lr;received=" in paths[0][0], paths
        phone = NatPhone("bob", port, allowed=("127.0.0.2", 5060))
        await phone.start()
        try:
            call = await run_uac(
                "uac-emergency",
                "127.0.0.1:5072",
                local_ip="127.0.0.1",
                call_duration=0.2,
                timeout=20,
                extra_args=[
                    "-key",
                    "caller",
                    "+358401000099",
                    "-key",
                    "ruri",
                    "sip:bob@voipgw.demo",
                ],
            )
        finally:
            phone.close()
        assert call.ok, call.describe()
        assert phone.invite_sources == [("127.0.0.2", 5060)] and phone.dropped == []
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(120):
            rest = await proc.stdout.read()
            await proc.wait()
        output.append(rest.decode())
        logs = {n: (state / f"voipgw-{n}.log").read_text(errors="replace") for n in (1, 2)}
    finally:
        await stop_everything(proc, state)
    text = "".join(output)
    assert proc.returncode == 0, text
    assert "voipgw-1: ready" in text and "voipgw-2: ready" in text, text
    assert text.rstrip().endswith("cluster stopped"), text
    # Round-robin: both instances took INVITEs (challenges, or calls routed), and
    # every call was routed once, wherever its challenge came from.
    assert all('"call_id": "' in logs[n] for n in (1, 2)), logs
    assert sum(logs[n].count("voipgw.router") for n in (1, 2)) >= 6, logs
