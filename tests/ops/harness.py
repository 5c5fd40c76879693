"""A real ``voipgw run`` process for operations tests: config, start, signals, state.

* :func:`gateway_toml` writes the demo configuration (deploy/demo/voipgw.toml) with
  every port, directory and peer moved to this test: SIP on a free UDP port of
  127.0.0.1, metrics on a free port, the embedded PostgreSQL and the CDR spool under a
  temporary state directory (or ``[database] url`` on a server the test runs), and a
  copy of the demo sites file whose emergency centres point at test peers.
* :class:`GatewayProcess` starts ``voipgw run`` the way users do, through the
  installed console script and from a directory outside the checkout (its state
  directory), with its output in a log file; waits for "voipgw ready", scrapes
  /metrics, sends SIGTERM or SIGKILL and waits for the exit status. It kills only the process it started.
* :func:`cdr_rows` and :func:`spooled_records` read what became of the call records:
  committed rows in PostgreSQL, and records still waiting in the local spool.

State directories are ``mkdtemp()`` directories directly under the system temp dir
(as in tests/conftest.py): as root the embedded server runs as another user, and
pytest resets its own temp root to mode 0700 on every start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from cdr.db import EmbeddedPostgres
from cdr.record import decode_spool_payload
from cdr.spool import Spool
from gateway.workers.plan import worker_name
from tests.emergency.rig import DEMO_CENTRE_PORTS, demo_sites_with
from tests.interop.sipp import SippUas, free_port, run_uac

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
REALM = "voipgw.demo"
#: ``VOIPGW_TEST_WORKERS=2`` runs every harness gateway as a supervisor with that many
#: worker processes (deploy/OPERATIONS.md "Worker processes"): the functional suite
#: with workers on. Unset or 1: a single process, as users run it by default.
TEST_WORKERS = int(os.environ.get("VOIPGW_TEST_WORKERS", "1"))

#: Setera's Espoo office LAN in the demo data: calls from here are office calls.
OFFICE_IP = "127.0.10.5"
#: Another phone in the same office (the guard limits INVITEs per source).
OFFICE_IP_2 = "127.0.10.6"


def voipgw_command() -> str:
    """The installed ``voipgw`` console script of the interpreter running the tests.

    Tests run the product as users do: a broken entry point or an import that only
    works from the checkout (``python -m gateway`` from the repository root hid one)
    must fail them.
    """
    script = Path(sys.executable).parent / "voipgw"
    if not script.exists():
        raise FileNotFoundError(f"{script} missing: install voipgw into this venv (make test)")
    return str(script)


async def voipgw(*args: str, cwd: str | Path = "/", limit: float = 120.0) -> str:
    """Runs the installed ``voipgw`` with ``args`` from ``cwd`` (outside the checkout);
    returns its stdout. Fails the test unless it exits 0."""
    proc = await asyncio.create_subprocess_exec(
        voipgw_command(),
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), limit)
    assert proc.returncode == 0, (args, (out + err).decode(errors="replace"))
    return out.decode()


async def set_password(config: Path, user: str, password: str, realm: str = "") -> None:
    """``voipgw users set-password`` as deploy/OPERATIONS.md has it, on the database
    of the gateway ``config`` describes (its realm: the harness's, :data:`REALM`)."""
    await voipgw(
        *("users", "set-password", user, "--realm", realm or REALM),
        *("--password", password, "--config", str(config)),
        cwd=config.parent,
    )


async def register_phone(setup: GatewaySetup, user: str, password: str) -> int:
    """Registers ``user`` (SIPp with digest, 600 s) from a free port of 127.0.0.1, the
    port its phone (a SIPp UAS) is to listen on; returns that port."""
    port = free_port(HOST)
    registered = await run_uac(
        "uac-register",
        setup.target,
        service=user,
        timeout=10,
        extra_args=[
            *("-au", user, "-ap", password, "-auth_uri", REALM),
            *("-set", "domain", REALM, "-set", "expires", "600"),
            *("-p", str(port)),
        ],
    )
    assert registered.ok, registered.describe()
    return port


#: Seconds ``voipgw run`` may take to print "voipgw ready" (initdb on first start).
READY_TIMEOUT = 90.0


def state_directory() -> Path:
    """A fresh state directory under the system temp dir (see the module docstring)."""
    path = Path(tempfile.mkdtemp(prefix="voipgw-ops-"))
    path.chmod(0o755)
    return path


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySetup:
    """Where one test's gateway lives and listens."""

    state: Path
    """State directory (embedded pgdata, CDR spool, config, log)."""
    sip_port: int
    """UDP port of the SIP listener on 127.0.0.1."""
    metrics_port: int
    """Port of /metrics, /healthz and /readyz on 127.0.0.1."""
    config: Path
    """The TOML file ``voipgw run --config`` reads."""
    workers: int = 1
    """Worker processes (``[server] workers``)."""
    worker_sip_port: int = 0
    """Worker N's own SIP port is this + N - 1 (when ``workers`` > 1)."""
    worker_metrics_port: int = 0
    """Worker N's own status port is this + N - 1 (when ``workers`` > 1)."""

    @property
    def target(self) -> str:
        """``host:port`` for SIPp."""
        return f"{HOST}:{self.sip_port}"

    @property
    def spool_dir(self) -> Path:
        return self.state / "cdr-spool"

    @property
    def locked_spool_dirs(self) -> list[Path]:
        """The spools the gateway's processes lock: the configured one, or with
        workers one per worker under it (gateway.workers.plan.worker_config)."""
        if self.workers == 1:
            return [self.spool_dir]
        return [self.spool_dir / f"w{index}" for index in range(1, self.workers + 1)]

    @property
    def instance(self) -> str:
        """``[gateway] instance`` as the configuration file names it now."""
        with self.config.open("rb") as file:
            return str(tomllib.load(file)["gateway"]["instance"])

    @property
    def process_names(self) -> list[str]:
        """The names the gateway's processes give their CDR rows and callback
        windows: the instance's, or with workers each worker's
        (gateway.workers.plan.worker_name)."""
        if self.workers == 1:
            return [self.instance]
        return [worker_name(self.instance, index) for index in range(1, self.workers + 1)]

    @property
    def addresses(self) -> set[tuple[str, int]]:
        """Every UDP address the gateway sends from: its SIP port, and with workers
        each worker's own port."""
        own = {(HOST, self.worker_sip_port + i) for i in range(self.workers)}
        return {(HOST, self.sip_port)} | (own if self.workers > 1 else set())

    @property
    def flow_uris(self) -> list[str]:
        """The ``flow_owner`` values of the bindings this gateway takes with
        ``[cluster]`` (tests/cluster/rig.py): its SIP URI, or each worker's own."""
        if self.workers == 1:
            return [f"sip:{HOST}:{self.sip_port}"]
        return [f"sip:{HOST}:{self.worker_sip_port + i}" for i in range(self.workers)]


def gateway_toml(
    state: Path,
    *,
    sip_port: int,
    metrics_port: int,
    upstream: str,
    sites: Path,
    database_url: str | None = None,
    cdr: Mapping[str, float | int] | None = None,
    registrar: bool = True,
    algorithms: tuple[str, ...] | None = None,
    authenticate_calls: bool = False,
    max_calls: int = 5000,
    workers: int = 1,
    worker_sip_port: int = 0,
    worker_metrics_port: int = 0,
) -> str:
    """The demo configuration moved onto this test's ports and directories."""
    server = (
        f"""
[server]
workers = {workers}
worker_sip_port = {worker_sip_port}
worker_metrics_port = {worker_metrics_port}
"""
        if workers > 1
        else ""
    )
    rtp_min = random.randrange(21000, 39000, 1000)
    database = f'url = "{database_url}"' if database_url else f'state_dir = "{state}"'
    cdr_extra = "\n".join(f"{key} = {value}" for key, value in (cdr or {}).items())
    registrar_section = f"""
[registrar]
realm = "{REALM}"
secret = "ops-test-secret-0123456789abcdef"
{_algorithms_line(algorithms)}
# These tests are about operations; their SIPp callers do not answer 407 challenges
# (call authentication is tested in tests/registrar/test_call_auth.py).
authenticate_calls = {"true" if authenticate_calls else "false"}
# The phones these tests register share 127.0.0.1 with the PBX (a trusted peer).
register_from_trusted_peers = true
"""
    return f"""
[gateway]
instance = "ops-{state.name[-8:]}"
state_dir = "{state}"
seed_sites = "{sites}"

[sip]
t1 = 0.5
no_answer_timeout = 180.0

[[sip.listen]]
transport = "UDP"
host = "{HOST}"
port = {sip_port}

[upstream]
uri = "{upstream}"
trusted_peers = ["127.0.0.1/32"]

[overload]
max_calls = {max_calls}
retry_after = 5
{server}
[metrics]
address = "{HOST}"
port = {metrics_port}

[logging]
level = "info"
format = "json"

[database]
{database}

[cdr]
spool_dir = "{state / "cdr-spool"}"
retention_months = 15
partitions_ahead = 3
{cdr_extra}

[routing]
default_next_hop = "{upstream}"
nomadic_policy = "announce-then-route"
resource_priority = "esnet.1"

{registrar_section if registrar else ""}
[media]
bind_address = "{HOST}"
rtp_port_min = {rtp_min}
rtp_port_max = {rtp_min + 999}
default_language = "fi"

[[media.recorded_lines]]
number = "+358201234567"
language = "fi"
mode = "early-media"

[guard]
trusted_peers = ["127.0.0.1/32"]
"""


def _algorithms_line(algorithms: tuple[str, ...] | None) -> str:
    if algorithms is None:
        return "# algorithms: the product's default"
    return "algorithms = [" + ", ".join(f'"{name}"' for name in algorithms) + "]"


def prepare(
    state: Path,
    *,
    upstream: str,
    centre_ports: Mapping[str, int] | None = None,
    database_url: str | None = None,
    cdr: Mapping[str, float | int] | None = None,
    registrar: bool = True,
    algorithms: tuple[str, ...] | None = None,
    authenticate_calls: bool = False,
    max_calls: int = 5000,
    workers: int | None = None,
) -> GatewaySetup:
    """Writes the sites copy and the config into ``state``.

    Args:
        state: the test's state directory.
        upstream: SIP URI of the PBX (and the ordinary calls' next hop).
        centre_ports: centre id -> port of a peer the test runs; the other centres
            get free ports nobody listens on.
        database_url: ``[database] url``; the embedded server under ``state`` if None.
        cdr: more ``[cdr]`` keys.
        registrar: include the demo's ``[registrar]`` section.
        algorithms: its digest algorithms, offered in this order; None leaves the
            key out, so the product's default applies (what real phones meet).
        authenticate_calls: its ``authenticate_calls`` (407 for calls from phones).
        max_calls: ``[overload] max_calls``.
        workers: ``[server] workers``; :data:`TEST_WORKERS` when None.
    """
    workers = TEST_WORKERS if workers is None else workers
    ports = {c: free_port(HOST) for c in DEMO_CENTRE_PORTS} | dict(centre_ports or {})
    sites = state / "sites.toml"
    sites.write_text(demo_sites_with(ports), encoding="utf-8")
    setup = GatewaySetup(
        state=state,
        sip_port=free_port(HOST),
        metrics_port=free_port(HOST),
        config=state / "voipgw.toml",
        workers=workers,
        worker_sip_port=free_port_run(workers) if workers > 1 else 0,
        worker_metrics_port=free_port_run(workers) if workers > 1 else 0,
    )
    setup.config.write_text(
        gateway_toml(
            state,
            sip_port=setup.sip_port,
            metrics_port=setup.metrics_port,
            upstream=upstream,
            sites=sites,
            database_url=database_url,
            cdr=cdr,
            registrar=registrar,
            algorithms=algorithms,
            authenticate_calls=authenticate_calls,
            max_calls=max_calls,
            workers=workers,
            worker_sip_port=setup.worker_sip_port,
            worker_metrics_port=setup.worker_metrics_port,
        ),
        encoding="utf-8",
    )
    return setup


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive ports free for UDP and TCP on :data:`HOST`
    (the workers' own ports are ``base + N - 1``)."""
    for _ in range(200):
        base = free_port(HOST)
        if base + count > 65535:
            continue
        if all(_free_both(base + i) for i in range(1, count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports on {HOST}")


def _free_both(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                return False
    return True


class GatewayError(RuntimeError):
    """``voipgw run`` did not start, or did not stop as it should."""


class GatewayProcess:
    """One ``voipgw run`` subprocess (its own session, output in ``log``).

    Args:
        setup: what :func:`prepare` wrote.
        log_name: file name of its output in the state directory.
        command: the subcommand ("run", or "demo" with its peers).
    """

    def __init__(
        self, setup: GatewaySetup, log_name: str = "voipgw.log", command: str = "run"
    ) -> None:
        self.setup = setup
        self.command = command
        self.log = setup.state / log_name
        self.proc: asyncio.subprocess.Process | None = None
        #: the worker processes' pids when ``[server] workers`` > 1, read at start
        self.worker_pids: list[int] = []

    async def start(self) -> None:
        """Starts the gateway and waits until it prints "voipgw ready".

        Raises:
            GatewayError: it exited or did not get ready in :data:`READY_TIMEOUT`.
        """
        with self.log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                voipgw_command(),
                self.command,
                "--config",
                str(self.setup.config),
                cwd=self.setup.state,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while b"voipgw ready" not in self.log.read_bytes():
            if self.proc.returncode is not None:
                raise GatewayError(f"voipgw exited with {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                await self.kill()
                raise GatewayError(f"voipgw not ready in {READY_TIMEOUT}s:\n{self.tail()}")
            await asyncio.sleep(0.1)
        self.worker_pids = worker_processes(self.proc.pid)

    async def _workers_gone(self, limit: float = 10.0) -> None:
        """With workers: waits until the worker processes have exited too (they die
        with the supervisor, a moment after it), so that their spools are free."""
        deadline = time.monotonic() + limit
        while any(pid_alive(pid) for pid in self.worker_pids):
            if time.monotonic() > deadline:
                raise GatewayError(f"workers {self.worker_pids} outlived the supervisor")
            await asyncio.sleep(0.05)

    def tail(self, limit: int = 6000) -> str:
        """The end of the gateway's output, for assertion messages."""
        return self.log.read_bytes()[-limit:].decode("utf-8", "backslashreplace")

    def signal(self, signum: signal.Signals) -> None:
        """Sends ``signum`` to the gateway process (not its group: PostgreSQL lives on).

        SIGSTOP and SIGCONT go to its worker processes too: a hung host stops them
        all (the others die with the supervisor, or are told by it)."""
        assert self.proc is not None
        if signum in (signal.SIGSTOP, signal.SIGCONT):
            for pid in self.worker_pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
        self.proc.send_signal(signum)

    async def wait(self, limit: float) -> int | None:
        """Waits up to ``limit`` seconds for the exit; returns the status or None."""
        assert self.proc is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), limit)
        if self.proc.returncode is not None:
            await self._workers_gone()
        return self.proc.returncode

    async def kill(self) -> None:
        """SIGKILL and reap (a no-op once it has exited)."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
            await self._workers_gone()

    async def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after the drain bound; returns the exit status."""
        if self.proc is None or self.proc.returncode is not None:
            return None if self.proc is None else self.proc.returncode
        self.signal(signal.SIGTERM)
        status = await self.wait(45)
        await self.kill()
        return status

    # ------------------------------------------------------------------ metrics

    def _get(self, path: str) -> str:
        url = f"http://{HOST}:{self.setup.metrics_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        """GET /readyz: (HTTP status, the JSON body)."""

        def get() -> tuple[int, dict[str, Any]]:
            try:
                return 200, json.loads(self._get("/readyz"))
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        return await asyncio.to_thread(get)

    async def scrape(self) -> str:
        """GET /metrics (the text exposition format)."""
        return await asyncio.to_thread(self._get, "/metrics")

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of every sample of ``name`` whose labels include ``labels``."""
        return sum_samples(await self.scrape(), name, **labels)


def sum_samples(text: str, name: str, **labels: str) -> float:
    """Sums the samples named ``name`` (full sample name, e.g. ``..._total``)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def wait_until(what: str, probe: Any, check: Any, limit: float) -> Any:
    """Polls ``await probe()`` every 0.25 s until ``check(value)``; fails after ``limit``."""
    deadline = time.monotonic() + limit
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await probe()
        except (OSError, asyncpg.PostgresError) as exc:
            last = exc
        else:
            if check(last):
                return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out after {limit}s waiting for {what}; last: {last!r}")


@contextlib.asynccontextmanager
async def running_gateway(setup: GatewaySetup) -> AsyncIterator[GatewayProcess]:
    """A started gateway, stopped (SIGTERM, then SIGKILL) when the block exits."""
    gateway = GatewayProcess(setup)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


class KillableUas(SippUas):
    """A SIPp UAS the test can SIGKILL mid-run (a crashed PBX)."""

    def kill_now(self) -> None:
        proc = self._proc
        assert proc is not None
        proc.kill()


# ---------------------------------------------------------------------- call records


@dataclass(frozen=True, slots=True)
class CdrRow:
    call_uuid: str
    call_id: str
    callee_dialled: str
    final_status: int
    disposition: str


async def cdr_rows(dsn: str) -> list[CdrRow]:
    """Every committed CDR row."""
    con = await asyncpg.connect(dsn)
    try:
        rows = await con.fetch(
            "SELECT call_uuid::text, call_id, callee_dialled, final_status,"
            " disposition::text FROM cdr"
        )
    finally:
        await con.close()
    return [CdrRow(*row) for row in rows]


def spooled_records(spool_dir: Path) -> list[dict[str, Any]]:
    """Records in the spool after its checkpoint (acknowledged, not yet committed).

    Only for a spool no running gateway holds (it takes the lock). With workers, each
    has its own spool under ``spool_dir`` (``w1``, ``w2``, ...): those are read too.
    """
    if not spool_dir.is_dir():
        return []
    workers = sorted(p for p in spool_dir.glob("w[0-9]*") if p.is_dir())
    return _spool_records(spool_dir) + [r for w in workers for r in _spool_records(w)]


def _spool_records(spool_dir: Path) -> list[dict[str, Any]]:
    spool = Spool(spool_dir)
    spool.open()
    try:
        payloads, _ = spool.read(spool.checkpoint(), spool.end(), 1_000_000)
    finally:
        spool.close()
    return [
        dataclasses.asdict(record)
        for payload in payloads
        for record in decode_spool_payload(payload)
    ]


def stop_embedded(pgdata: Path) -> None:
    """Stops an embedded PostgreSQL left running on ``pgdata`` (after a SIGKILL)."""
    if (pgdata / "postmaster.pid").exists():
        EmbeddedPostgres(pgdata).stop(mode="immediate")


def remove_state(state: Path) -> None:
    """Stops the state directory's embedded PostgreSQL, if any, and deletes it."""
    try:
        stop_embedded(state / "pgdata")
    finally:
        shutil.rmtree(state, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def worker_processes(pid: int) -> list[int]:
    """The worker processes (``voipgw run --worker N``) among ``pid``'s children."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    workers = []
    for child in text.split():
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--worker" in argv:
            workers.append(int(child))
    return workers
