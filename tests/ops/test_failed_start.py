"""A failed start of ``voipgw run`` exits at once, says what failed, and leaves nothing.

Issue 19: a second ``voipgw run`` on the state directory of a running one logged the
SpoolError traceback and stayed alive. Each test starts the installed command from its
state directory (outside the checkout, as users do) and checks the exit status, that
the output ends with one ``voipgw: cannot start: ...`` line naming the part and no
traceback, and that no PostgreSQL process the failed gateway started is left (the
processes whose command line names the state directory's ``pgdata``).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest

from tests.interop.sipp import free_port
from tests.ops.harness import (
    HOST,
    GatewaySetup,
    prepare,
    remove_state,
    running_gateway,
    state_directory,
    voipgw_command,
)

pytestmark = [pytest.mark.interop, pytest.mark.postgres]

#: Upper bound on how long a failed start may take to exit (a bound, not a goal:
#: the exits measured take about 2 s, most of it starting the embedded server).
EXIT_LIMIT = 60.0


def postgres_processes(pgdata: Path) -> set[int]:
    """Pids of the processes (postgres, initdb, pg_ctl) whose command line names
    ``pgdata``."""
    found = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any(str(pgdata) in part for part in proc.info["cmdline"] or ()):
            found.add(proc.info["pid"])
    return found


async def failed_run(config: Path, cwd: Path, *, signal_after: str = "") -> tuple[int, str]:
    """Runs ``voipgw run --config config`` and waits for its exit.

    Args:
        signal_after: when set, SIGTERM is sent as soon as a process names this text
            in its command line (the start is then under way).

    Returns:
        The exit status and the whole output.
    """
    log = cwd / f"failed-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            voipgw_command(),
            "run",
            "--config",
            str(config),
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    started = time.monotonic()
    try:
        if signal_after:
            while not any(
                signal_after in " ".join(p.info["cmdline"] or ())
                for p in psutil.process_iter(["cmdline"])
            ):
                assert proc.returncode is None, log.read_text(errors="replace")
                assert time.monotonic() - started < EXIT_LIMIT
                await asyncio.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(proc.wait(), EXIT_LIMIT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    print(f"exit {status} after {time.monotonic() - started:.1f} s")
    return status, log.read_text(errors="replace")


def assert_one_line_error(output: str, *expected: str) -> None:
    assert "Traceback" not in output, output[-4000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith("voipgw: cannot start: "), output[-4000:]
    for text in expected:
        assert text in last, last


def second_config(setup: GatewaySetup) -> Path:
    """The same configuration on other ports (the spool, not a port, is what clashes)."""
    text = setup.config.read_text(encoding="utf-8")
    text = text.replace(f"port = {setup.sip_port}\n", f"port = {free_port(HOST)}\n")
    text = text.replace(f"port = {setup.metrics_port}\n", f"port = {free_port(HOST)}\n")
    path = setup.state / "second.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.timeout(240)
@pytest.mark.asyncio
async def test_a_second_gateway_on_the_same_state_directory_exits_at_once() -> None:
    state = state_directory()
    try:
        setup = prepare(state, upstream=f"sip:{HOST}:{free_port(HOST)}")
        pgdata = state / "pgdata"
        async with running_gateway(setup) as first:
            before = postgres_processes(pgdata)
            status, output = await failed_run(second_config(setup), state)
            assert status == 1, output[-4000:]
            assert_one_line_error(output, "CDR spool", "in use by another process")
            # It used the first gateway's server and left it as it was.
            assert postgres_processes(pgdata) == before
            assert first.proc is not None and first.proc.returncode is None
        assert postgres_processes(pgdata) == set()
    finally:
        remove_state(state)


@pytest.mark.timeout(240)
@pytest.mark.asyncio
async def test_a_failed_start_stops_the_postgres_it_started() -> None:
    state = state_directory()
    try:
        setup = prepare(state, upstream=f"sip:{HOST}:{free_port(HOST)}")
        # Another process holds the spool (as a running gateway does); no server runs.
        # With workers (VOIPGW_TEST_WORKERS) the held spool is worker 1's.
        spool = setup.locked_spool_dirs[0]
        spool.mkdir(parents=True)
        holder = os.open(spool / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
            status, output = await failed_run(setup.config, state)
        finally:
            os.close(holder)
        assert status == 1, output[-4000:]
        assert_one_line_error(output, "CDR spool")
        assert "database: embedded PostgreSQL" in output  # it did start one ...
        assert postgres_processes(state / "pgdata") == set()  # ... and stopped it
    finally:
        remove_state(state)


@pytest.mark.timeout(240)
@pytest.mark.asyncio
async def test_a_sip_port_in_use_is_named_and_releases_everything() -> None:
    state = state_directory()
    try:
        setup = prepare(state, upstream=f"sip:{HOST}:{free_port(HOST)}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind((HOST, setup.sip_port))
            status, output = await failed_run(setup.config, state)
        assert status == 1, output[-4000:]
        assert_one_line_error(
            output, f"SIP listeners: UDP {HOST}:{setup.sip_port}: Address already in use"
        )
        assert postgres_processes(state / "pgdata") == set()
    finally:
        remove_state(state)


@pytest.mark.timeout(240)
@pytest.mark.asyncio
async def test_sigterm_during_start_releases_the_postgres_being_started() -> None:
    # Before: SIGTERM during start-up killed the process with initdb or the server
    # still running, left to nobody.
    state = state_directory()
    try:
        setup = prepare(state, upstream=f"sip:{HOST}:{free_port(HOST)}")
        pgdata = state / "pgdata"
        status, output = await failed_run(setup.config, state, signal_after=str(pgdata))
        assert status == 1, output[-4000:]
        assert_one_line_error(output, "interrupted by SIGTERM")
        assert postgres_processes(pgdata) == set()
    finally:
        remove_state(state)
