"""SIPVicious (svmap, svwar, svcrack) against a running gateway with the guard.

The gateway runs in-process on loopback with a registrar backed by PostgreSQL that
knows one real user; the tools run as subprocesses. Each attack is also run against
an unguarded (or less guarded) gateway where that makes the result meaningful, so the
tests show what the guard changes rather than assume the attack would have worked:
svcrack does find the password without the guard and does not with it.

Run with ``deploy/loopback-only.sh .venv/bin/pytest tests/security -m tool -s`` to see
the figures printed by each test.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from gateway.config import parse_config
from gateway.edge.guard import Guard
from gateway.edge.guard_config import GuardConfig
from gateway.registrar import Algorithm, BindingStore, Registrar
from gateway.service.server import Gateway
from gateway.sip.events import Endpoint
from tests.interop.sipp import free_port
from tests.registrar.helpers import REALM, config

pytestmark = [pytest.mark.tool, pytest.mark.postgres]

HOST = "127.0.0.1"
USER = "alice"
PASSWORD = "s3cret-Tr0ub4dor"
#: Seconds any one tool run may take.
TOOL_TIMEOUT = 60.0
#: Wrong guesses before the real password in the svcrack dictionary.
WRONG_GUESSES = 40
#: Extensions svwar tries; the real user is among them.
EXTENSIONS = ["100", "101", "admin", USER, "bob", "1000", "2000", "operator", "test", "carol"]


class ToolMissing(RuntimeError):
    """A SIPVicious program is not installed: tests marked ``tool`` must fail."""


def find_tool(name: str) -> str:
    """Path of svmap/svwar/svcrack (Debian's sipvicious also names them sipvicious_*)."""
    for candidate in (name, f"sipvicious_{name}"):
        path = shutil.which(candidate)
        if path is not None:
            return path
    raise ToolMissing(f"{name} not found: apt-get install -y sipvicious")


@dataclass
class Tool:
    """One finished tool run."""

    argv: list[str]
    output: str
    elapsed: float
    returncode: int | None

    def describe(self) -> str:
        return (
            f"$ {' '.join(self.argv)}\n(rc={self.returncode}, {self.elapsed:.1f}s)\n{self.output}"
        )


async def run_tool(name: str, *args: str) -> Tool:
    """Runs a SIPVicious tool bound to loopback, bounded by TOOL_TIMEOUT."""
    argv = [find_tool(name), *args, "-b", HOST, "-P", str(free_port(HOST))]
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), TOOL_TIMEOUT)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return Tool(argv, out.decode("utf-8", "replace"), time.monotonic() - started, proc.returncode)


class CountingGuard:
    """Wraps a guard (or none) and records what reached it, for the figures."""

    def __init__(self, guard: Guard | None) -> None:
        self.guard = guard
        self.received: list[tuple[float, bytes, bool]] = []

    def admit(self, data: bytes, source: Endpoint, now: float) -> bool:
        decision = True if self.guard is None else self.guard.admit(data, source, now)
        self.received.append((now, data.split(b"\r\n", 1)[0], decision))
        return decision

    def auth_failed(self, source: Endpoint, username: str) -> None:
        if self.guard is not None:
            self.guard.auth_failed(source, username)

    def requests(self, method: bytes) -> list[tuple[float, bool]]:
        return [(t, ok) for t, line, ok in self.received if line.startswith(method + b" ")]


@contextlib.asynccontextmanager
async def gateway(
    pool: asyncpg.Pool, guard: Guard | None
) -> AsyncIterator[tuple[Endpoint, CountingGuard, BindingStore]]:
    """A gateway with the registrar (one real user) and ``guard`` in front."""
    store = BindingStore(pool)
    await store.set_password(USER, REALM, PASSWORD)
    counting = CountingGuard(guard)
    # SIPVicious answers the first challenge and computes MD5 only.
    registrar = Registrar(
        config(algorithms=(Algorithm.MD5, Algorithm.SHA_256)),
        store,
        on_auth_failure=counting.auth_failed,
    )
    gateway_config = parse_config(
        {
            "sip": {"listen": [{"transport": "UDP", "host": HOST, "port": 0}]},
            "upstream": {"uri": "sip:127.0.0.1:9"},
        }
    )
    gw = Gateway(gateway_config, services={"REGISTER": registrar.handle}, guard=counting)
    (endpoint,) = await gw.start()
    try:
        yield endpoint, counting, store
    finally:
        await gw.close()


def guard(**overrides: object) -> Guard:
    return Guard(dataclasses.replace(GuardConfig(), **overrides))  # type: ignore[arg-type]


#: The guard with its scanner filter off, so that what stops an attack is shown to be
#: the registrar's uniform answers or the ban, not the User-Agent check alone.
def no_ua_filter(**overrides: object) -> Guard:
    return guard(scanner_user_agents=(), **overrides)


# ---------------------------------------------------------------------- svmap


@pytest.mark.asyncio
async def test_svmap(pg_pool: asyncpg.Pool) -> None:
    async with gateway(pg_pool, no_ua_filter()) as (endpoint, counting, _):
        seen = await run_tool("svmap", HOST, "-p", str(endpoint.port))
    print(seen.describe())
    assert f"{HOST}:{endpoint.port}" in seen.output, seen.describe()
    assert counting.requests(b"OPTIONS")

    async with gateway(pg_pool, guard()) as (endpoint, counting, _):
        hidden = await run_tool("svmap", HOST, "-p", str(endpoint.port))
    print(hidden.describe())
    assert f"{HOST}:{endpoint.port}" not in hidden.output, hidden.describe()
    options = counting.requests(b"OPTIONS")
    assert options and not any(ok for _, ok in options)


# ---------------------------------------------------------------------- svwar


@pytest.mark.parametrize("method", ["REGISTER", "OPTIONS"])
@pytest.mark.asyncio
async def test_svwar_finds_no_extension(pg_pool: asyncpg.Pool, tmp_path: Path, method: str) -> None:
    # REGISTER: the registrar challenges every user name alike (401), so svwar's
    # probe of a random name already looks like a real one and it gives up.
    # OPTIONS: the gateway answers every Request-URI alike (200), so svwar walks the
    # whole list and tells none apart.
    wordlist = tmp_path / "extensions.txt"
    wordlist.write_text("\n".join(EXTENSIONS) + "\n")
    for label, g in (("scanner filter off", no_ua_filter()), ("default guard", guard())):
        async with gateway(pg_pool, g) as (endpoint, counting, _):
            result = await run_tool(
                "svwar",
                "-d",
                str(wordlist),
                "-p",
                str(endpoint.port),
                HOST,
                "--force",
                "-m",
                method,
            )
        received = counting.requests(method.encode())
        admitted = sum(ok for _, ok in received)
        print(f"--- svwar -m {method}, {label}: {len(received)} received, {admitted} admitted")
        print(result.describe())
        # svwar prints a table of "Extension | Authentication" rows for what it found.
        for extension in EXTENSIONS:
            assert not re.search(rf"\|\s*{re.escape(extension)}\s*\|", result.output), (
                result.describe()
            )
        assert "reqauth" not in result.output and "noauth" not in result.output
        assert "found nothing" in result.output, result.describe()
        if g.config.scanner_user_agents:
            assert received and admitted == 0
        elif method == "OPTIONS":
            assert admitted >= len(EXTENSIONS)  # every name was tried and answered


# ---------------------------------------------------------------------- svcrack


def wordlist(path: Path) -> Path:
    guesses = [f"guess{i:03d}" for i in range(WRONG_GUESSES)] + [PASSWORD, "after1", "after2"]
    path.write_text("\n".join(guesses) + "\n")
    return path


async def crack(
    pg_pool: asyncpg.Pool, tmp_path: Path, g: Guard | None
) -> tuple[Tool, CountingGuard]:
    words = wordlist(tmp_path / "passwords.txt")
    async with gateway(pg_pool, g) as (endpoint, counting, _):
        result = await run_tool(
            "svcrack",
            "-u",
            USER,
            "-d",
            str(words),
            "-p",
            str(endpoint.port),
            "--maximumtime",
            "5",
            HOST,
        )
    return result, counting


def cracked(result: Tool) -> bool:
    return PASSWORD in result.output


def figures(label: str, result: Tool, counting: CountingGuard, g: Guard | None) -> str:
    registers = counting.requests(b"REGISTER")
    first = registers[0][0] if registers else 0.0
    refused = [t for t, ok in registers if not ok]
    ban_at = f"{refused[0] - first:.3f}s after the first" if refused else "never"
    line = (
        f"--- svcrack, {label}: REGISTERs sent {len(registers)}, admitted "
        f"{sum(ok for _, ok in registers)}, first refused {ban_at}"
    )
    if g is not None:
        line += f"; auth failures {g.stats.auth_failures}, bans {g.stats.bans}"
    return line + "\n" + result.describe()


@pytest.mark.asyncio
async def test_svcrack_cracks_an_unguarded_gateway(pg_pool: asyncpg.Pool, tmp_path: Path) -> None:
    # The control: the dictionary and the tool do work, so the next test means something.
    result, counting = await crack(pg_pool, tmp_path, None)
    print(figures("no guard", result, counting, None))
    assert cracked(result), result.describe()


@pytest.mark.parametrize(
    ("label", "make"),
    [
        ("ban only (scanner filter off)", lambda: no_ua_filter(max_auth_failures=5)),
        ("default guard", guard),
    ],
)
@pytest.mark.asyncio
async def test_svcrack_is_stopped_before_the_password(
    pg_pool: asyncpg.Pool, tmp_path: Path, label: str, make: Callable[[], Guard]
) -> None:
    g = make()
    result, counting = await crack(pg_pool, tmp_path, g)
    print(figures(label, result, counting, g))
    assert not cracked(result), result.describe()
    registers = counting.requests(b"REGISTER")
    admitted = sum(ok for _, ok in registers)
    if g.config.scanner_user_agents:
        assert admitted == 0  # "friendly-scanner" never reaches the registrar
    else:
        # 5 failures (each a challenge + a wrong answer), then the ban
        assert g.stats.auth_failures == g.config.max_auth_failures
        assert g.stats.bans == 1
        assert admitted <= 2 * g.config.max_auth_failures + 1
    assert len(registers) > admitted  # it kept trying, and was refused


@pytest.mark.asyncio
async def test_svcrack_from_a_trusted_peers_address_is_banned(
    pg_pool: asyncpg.Pool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 19: svcrack from the PBX's address found the password after 30 tries,
    # because failures from trusted peers were not counted. svcrack sends from
    # 127.0.0.1, here the PBX: exempt from rate limits and the scanner filter (its
    # "friendly-scanner" passes), not from the ban.
    g = guard(trusted_peers=(ipaddress.ip_network(f"{HOST}/32"),), max_auth_failures=5)
    with caplog.at_level("WARNING", logger="voipgw.guard"):
        result, counting = await crack(pg_pool, tmp_path, g)
    print(figures("trusted source", result, counting, g))
    assert not cracked(result), result.describe()
    assert g.stats.auth_failures == g.config.max_auth_failures
    assert g.stats.bans == 1
    assert g.stats.dropped_banned > 0
    assert [r.getMessage() for r in caplog.records] == [
        f"guard: banned {HOST} for 600 s: 5 authentication failures within 60 s"
    ]
