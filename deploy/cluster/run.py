"""`make cluster`: the reference cluster on loopback, in the foreground.

Starts, in order: one embedded PostgreSQL (state/cluster/pgdata, database "voipgw"),
each voipgw instance of deploy/cluster/voipgw-*.toml on it (the first imports the
demo sites, so it is started alone first), then Kamailio 5.6 with
deploy/cluster/kamailio.cfg on 127.0.0.2:5060 in front of them. Ctrl-C (or SIGTERM)
stops everything in reverse order: Kamailio, the instances (SIGTERM: each drains),
PostgreSQL. Only the processes started here are signalled, by their own ids.

It is a demo of deploy/OPERATIONS.md "Several instances", not a process manager: in
production each part is its own systemd unit (and PostgreSQL a Patroni cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import asyncpg

from cdr.db import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "deploy" / "cluster"
#: Where the cluster's state lives (VOIPGW_CLUSTER_STATE: elsewhere, for tests).
STATE = Path(os.environ.get("VOIPGW_CLUSTER_STATE", ROOT / "state" / "cluster")).resolve()
KAMAILIO_LISTEN = "127.0.0.2:5060"
#: Seconds an instance may take to print "voipgw ready".
READY_TIMEOUT = 90.0


def kamailio_binary() -> str:
    found = shutil.which("kamailio") or "/usr/sbin/kamailio"
    if not os.access(found, os.X_OK):
        sys.exit("kamailio not found: `make tools` installs Debian's kamailio package")
    return found


async def shared_database(pg: EmbeddedPostgres) -> str:
    """Starts the embedded server and returns the URL of its "voipgw" database."""
    await asyncio.to_thread(pg.start)
    con = await asyncpg.connect(pg.dsn("postgres"))
    try:
        if not await con.fetchval("SELECT 1 FROM pg_database WHERE datname = 'voipgw'"):
            await con.execute("CREATE DATABASE voipgw")
    finally:
        await con.close()
    return pg.dsn("voipgw")


def instance_config(template: Path, dsn: str) -> Path:
    """The instance's config with ``[database] url`` on the shared server and its
    state directories under :data:`STATE`."""
    text = template.read_text(encoding="utf-8").replace('"state/cluster/', f'"{STATE}/')
    text, count = re.subn(r'(?m)^url = ".*"$', f'url = "{dsn}"', text)
    if count != 1:
        sys.exit(f"{template}: expected one [database] url line")
    path = STATE / template.name
    path.write_text(text, encoding="utf-8")
    return path


async def start_instance(config: Path) -> asyncio.subprocess.Process:
    log = STATE / f"{config.stem}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "voipgw"),
            *("run", "--config", str(config)),
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    deadline = time.monotonic() + READY_TIMEOUT
    while b"voipgw ready" not in log.read_bytes():
        if proc.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{config.stem} did not start; see {log}")
        await asyncio.sleep(0.2)
    print(f"{config.stem}: ready (log {log})", flush=True)
    return proc


async def start_kamailio() -> asyncio.subprocess.Process:
    rundir = STATE / "kamailio"
    rundir.mkdir(parents=True, exist_ok=True)
    log = STATE / "kamailio.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            kamailio_binary(),
            *("-f", str(HERE / "kamailio.cfg"), "-DD", "-E"),
            *("-P", str(rundir / "kamailio.pid"), "-Y", str(rundir), "-w", str(rundir)),
            *("-A", f"LISTEN=udp:{KAMAILIO_LISTEN}"),
            *("-A", f'DS_LIST="{HERE / "dispatcher.list"}"'),
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,  # its children form one group, signalled as one
        )
    print(f"kamailio: started (log {log})", flush=True)
    return proc


async def stop(proc: asyncio.subprocess.Process, *, group: bool = False) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 45)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        await proc.wait()


async def main() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    STATE.chmod(0o755)  # as root the embedded server runs as another user
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    pg = EmbeddedPostgres(STATE / "pgdata")
    instances: list[asyncio.subprocess.Process] = []
    kamailio = None
    try:
        dsn = await shared_database(pg)
        print(f"PostgreSQL: {dsn}", flush=True)
        for template in sorted(HERE.glob("voipgw-*.toml")):
            instances.append(await start_instance(instance_config(template, dsn)))
        kamailio = await start_kamailio()
        print(
            f"cluster ready: Kamailio on udp:{KAMAILIO_LISTEN} in front of"
            f" {len(instances)} instances (deploy/cluster/dispatcher.list); Ctrl-C stops",
            flush=True,
        )
        watched = [asyncio.ensure_future(p.wait()) for p in [*instances, kamailio]]
        stop_wait = asyncio.ensure_future(stopping.wait())
        await asyncio.wait([stop_wait, *watched], return_when=asyncio.FIRST_COMPLETED)
        for task in [stop_wait, *watched]:
            task.cancel()
        if not stopping.is_set():
            print("a process of the cluster exited; stopping the others", flush=True)
    finally:
        if kamailio is not None:
            await stop(kamailio, group=True)
        await asyncio.gather(*(stop(p) for p in instances))
        await asyncio.to_thread(pg.stop)
        print("cluster stopped", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
