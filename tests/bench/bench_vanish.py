"""Soak: callers that vanish mid-call, for ``VOIPGW_SOAK_SECONDS`` (default 600 s).

Issue 19: a phone that vanishes (power cut, lost uplink) never sends BYE. Its call
must still end, its CDR close, and the gateway must not grow. One run of
``voipgw run`` (the installed command, embedded PostgreSQL, CDRs, the demo config
moved onto test ports: :mod:`tests.ops.harness`) with RFC 4028 session timers of
90 s (``[sip] session_expires``/``min_se``), between

* an office phone's SIPp caller placing ``VOIPGW_SOAK_RATE`` calls/s (default 20):
  95 % ordinary calls held ``HOLD`` seconds and hung up
  (``uac-long-call-or-failure``), 5 % that vanish once answered
  (``uac-vanish-after-answer``: ACK, then silence: no BYE, no answer to a refresh);
* a PBX that stays alive and answers refreshes (``uas-answer-refreshes``).

The gateway refreshes the vanished caller's leg (it knows nothing of session
timers, so the gateway is its refresher) at half the interval; no answer by Timer B
(64·T1 = 32 s) ends the call on both legs with ``ended_by = session-timer``. So a
vanished call lasts at most 45 + 32 s (plus loop lag).

It prints, from one run: calls started, CDR rows (and how many per ``ended_by``),
active calls over time and at the end, and the gateway's RSS sampled every 15 s:
first, last, peak, and the slope over the second half of the run (flat is the goal).
Exit status 1 when rows != calls started, or active calls do not return to 0, or a
row stays in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import asyncpg

from cdr.db import EmbeddedPostgres
from tests.interop.sipp import SippResult, SippUas, run_uac
from tests.ops.harness import (
    HOST,
    OFFICE_IP,
    GatewayProcess,
    prepare,
    remove_state,
    state_directory,
)

SECONDS = float(os.environ.get("VOIPGW_SOAK_SECONDS", "600"))
RATE = float(os.environ.get("VOIPGW_SOAK_RATE", "20"))
VANISH_SHARE = 0.05
HOLD = 5.0
SESSION_EXPIRES = 90
#: Half the interval (the gateway's refresh) plus Timer B (32 s at T1 = 0.5 s).
VANISHED_CALL_BOUND = SESSION_EXPIRES / 2 + 32
SAMPLE_EVERY = 15.0
#: The guard's per-source limits would shed one SIPp socket's calls; [guard] is the
#: demo config's last table.
GUARD_LIMITS = """
requests_per_second = 0
invites_per_second = 0
"""
ORDINARY = "sip:0401111111@{target}"
VANISHING = "sip:0402222222@{target}"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def gateway_pid(setup_state: Path) -> int:
    """The ``voipgw run`` process of this state directory (its command line names it)."""
    config = str(setup_state / "voipgw.toml")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"run" in cmdline and config.encode() in cmdline and b"postgres" not in cmdline[0]:
            return int(entry)
    raise RuntimeError("voipgw run process not found")


async def cdr_counts(dsn: str) -> dict[str, int]:
    con = await asyncpg.connect(dsn)
    try:
        rows = await con.fetch(
            "SELECT coalesce(ended_by::text, 'in progress') AS ended_by, count(*) AS n"
            " FROM cdr GROUP BY 1"
        )
        return {row["ended_by"]: row["n"] for row in rows}
    finally:
        await con.close()


def started(result: SippResult) -> int:
    return result.successful_calls + result.failed_calls


async def soak() -> int:
    state = state_directory()
    samples: list[tuple[float, int, float]] = []  # (seconds since start, RSS KiB, active)
    try:
        async with SippUas("uas-answer-refreshes", host=HOST, timeout=SECONDS + 600) as pbx:
            setup = prepare(state, upstream=pbx.uri)
            text = setup.config.read_text(encoding="utf-8")
            assert "\n[sip]\n" in text
            text = text.replace(
                "\n[sip]\n",
                f"\n[sip]\nsession_expires = {SESSION_EXPIRES}\nmin_se = {SESSION_EXPIRES}\n",
                1,
            )
            setup.config.write_text(text + GUARD_LIMITS, encoding="utf-8")
            gateway = GatewayProcess(setup, "voipgw-soak.log")
            await gateway.start()
            try:
                pid = gateway_pid(state)
                began = time.monotonic()
                stop = asyncio.Event()

                async def sample() -> None:
                    while not stop.is_set():
                        active = await gateway.metric("voipgw_active_calls")
                        samples.append((time.monotonic() - began, rss_kib(pid), active))
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)

                sampler = asyncio.create_task(sample())
                vanish_rate = RATE * VANISH_SHARE
                ordinary, vanishing = await asyncio.gather(
                    run_uac(
                        "uac-long-call-or-failure",
                        setup.target,
                        local_ip=OFFICE_IP,
                        calls=round((RATE - vanish_rate) * SECONDS),
                        rate=RATE - vanish_rate,
                        call_duration=HOLD,
                        timeout=SECONDS + 120,
                        extra_args=[
                            "-key",
                            "caller",
                            "bob",
                            "-key",
                            "ruri",
                            ORDINARY.format(target=setup.target),
                        ],
                    ),
                    run_uac(
                        "uac-vanish-after-answer",
                        setup.target,
                        local_ip=OFFICE_IP,
                        calls=round(vanish_rate * SECONDS),
                        rate=vanish_rate,
                        timeout=SECONDS + 120,
                        extra_args=[
                            "-key",
                            "caller",
                            "carol",
                            "-key",
                            "ruri",
                            VANISHING.format(target=setup.target),
                        ],
                    ),
                )
                load_ended = time.monotonic() - began
                # The last vanished calls end within the bound after their answer.
                deadline = time.monotonic() + VANISHED_CALL_BOUND + 30
                active = await gateway.metric("voipgw_active_calls")
                while active > 0 and time.monotonic() < deadline:
                    await asyncio.sleep(1.0)
                    active = await gateway.metric("voipgw_active_calls")
                drained_after = time.monotonic() - began - load_ended
                stop.set()
                await sampler
                samples.append((time.monotonic() - began, rss_kib(pid), active))
                # A moment for the last records' batch.
                await asyncio.sleep(2.0)
                pg = EmbeddedPostgres(state / "pgdata")
                assert await asyncio.to_thread(pg.start) is False  # the gateway's own
                counts = await cdr_counts(pg.dsn("voipgw"))
            finally:
                await gateway.stop()
    finally:
        remove_state(state)

    calls = started(ordinary) + started(vanishing)
    rows = sum(counts.values())
    print(f"soak: {SECONDS:.0f} s at {RATE:g} calls/s, {VANISH_SHARE:.0%} vanishing after answer")
    print(f"  ordinary calls:  {ordinary.describe().splitlines()[0]}")
    print(f"  vanishing calls: {vanishing.describe().splitlines()[0]}")
    print(f"  calls started {calls}; CDR rows {rows}; by ended_by: {dict(sorted(counts.items()))}")
    print(
        f"  active calls: peak {max(s[2] for s in samples):.0f}; "
        f"{active:.0f} at {drained_after:.0f} s after the load ended"
    )
    rss = [s[1] for s in samples]
    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    slope = 0.0
    if len(half) >= 2:
        xs = [s[0] / 60 for s in half]
        ys = [float(s[1]) for s in half]
        slope = statistics.linear_regression(xs, ys).slope
    print(
        f"  RSS KiB: first {rss[0]}, last {rss[-1]}, peak {max(rss)}; "
        f"second-half slope {slope:+.0f} KiB/min over {len(half)} samples"
    )
    print(
        "  samples (s, RSS KiB, active): " + " ".join(f"{t:.0f}/{r}/{a:.0f}" for t, r, a in samples)
    )
    failed = []
    if rows != calls:
        failed.append(f"{rows} CDR rows for {calls} calls")
    if counts.get("in progress"):
        failed.append(f"{counts['in progress']} rows still in progress")
    if active != 0:
        failed.append(f"{active:.0f} calls still active")
    for reason in failed:
        print(f"  FAIL: {reason}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(soak()))
