"""Issue 16 must-show 1: Kamailio's dispatcher in front of two voipgw instances.

deploy/cluster/kamailio.cfg (on 127.0.0.2, probing each instance with OPTIONS every
second) in front of instances A and B (``voipgw run``, one shared PostgreSQL), whose
PBX stand-in is a SIPp UAS. SIPp places calls through Kamailio:

* run 1, :data:`CALLS_1` calls at :data:`RATE` calls/s, each held :data:`HOLD` s;
  A is SIGKILLed half-way. Calls spread over both instances (counted from each
  instance's CDRs in PostgreSQL); the calls that fail are counted and compared with
  those A held at the kill (its in-progress CDR rows: written when a call is
  answered, never closed since);
* run 2, :data:`CALLS_2` calls started once a probe interval and Kamailio's
  fr_timer have passed since the kill: every one succeeds, through B.

Then B is drained (SIGTERM) while it holds a call: the probes see its OPTIONS answer
turn 503 and take it out while it still runs, new calls get Kamailio's own 503 (no
instance left), and the held call goes on to its end through Kamailio.

The figures (spread, failures, in-flight count) are printed; run with ``-s``.
Counts are bounded (:data:`CALLS_1` + :data:`CALLS_2` = 600 calls) and so is time.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import time

import asyncpg
import pytest

from tests.cluster.rig import Kamailio, start_instance
from tests.interop.sipp import SippResult, SippUas, run_uac
from tests.ops.harness import (
    HOST,
    GatewayProcess,
    remove_state,
    state_directory,
    wait_until,
)

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.interop,
    pytest.mark.postgres,
    pytest.mark.tool,
    pytest.mark.asyncio,
]

CALLS_1 = int(os.environ.get("VOIPGW_CLUSTER_CALLS_1", "400"))
CALLS_2 = int(os.environ.get("VOIPGW_CLUSTER_CALLS_2", "200"))
RATE = float(os.environ.get("VOIPGW_CLUSTER_RATE", "30"))
#: Seconds each call lasts once answered.
HOLD = 2.0
#: Seconds into run 1 when A is killed.
KILL_AFTER = CALLS_1 / RATE / 2
#: Seconds the call held across B's drain lasts.
DRAIN_HOLD = 8.0
PING_EVERY = 1
#: Kamailio's fr_timer (deploy/cluster/kamailio.cfg), seconds.
FR_TIMER = 2.0
KAMAILIO_HOST = "127.0.0.2"
#: A subscriber of the demo sites data, and the number bob dials (the PBX answers).
CALLER = "bob"
DIALLED = "+35891234567"


def guard_trusts_kamailio(text: str) -> str:
    """Kamailio's address is exempt from the per-source rate limits ([guard]) but is
    not a PBX ([upstream] trusted_peers keeps 127.0.0.1 alone): its calls are
    subscribers' calls, routed to the PBX."""
    guard = '[guard]\ntrusted_peers = ["127.0.0.1/32"]'
    assert guard in text
    return text.replace(guard, f'[guard]\ntrusted_peers = ["127.0.0.1/32", "{KAMAILIO_HOST}/32"]')


async def cdr_counts(dsn: str, kill_wall: float) -> dict[str, dict[str, int]]:
    """Per instance: calls started before / after the kill, rows the instance never
    closed (open, or closed by a survivor as instance-dead), and
    answered calls."""
    con = await asyncpg.connect(dsn)
    try:
        rows = await con.fetch(
            """
            SELECT split_part(gateway_instance, '-ops-', 1) AS name,
                   count(*) FILTER (WHERE started_at < to_timestamp($1)) AS before,
                   count(*) FILTER (WHERE started_at >= to_timestamp($1)) AS after,
                   count(*) FILTER (WHERE ended_by IS NULL OR ended_by = 'instance-dead') AS open,
                   count(*) FILTER (WHERE final_status = 200) AS answered
            FROM cdr GROUP BY 1
            """,
            kill_wall,
        )
    finally:
        await con.close()
    return {r["name"]: {k: r[k] for k in ("before", "after", "open", "answered")} for r in rows}


def calls(
    target: str, count: int, hold: float = HOLD, rate: float = RATE
) -> asyncio.Task[SippResult]:
    """``count`` ordinary calls by bob (a subscriber of the demo data) to a number
    the PBX serves, through ``target``."""
    return asyncio.create_task(
        run_uac(
            "uac-emergency",  # any Request-URI, caller by key: an ordinary call here
            target,
            calls=count,
            rate=rate,
            call_duration=hold,
            # A call whose INVITE A had answered 100 Trying when it died waits at
            # Kamailio for fr_inv_timer (ringing time): SIPp gives up on it sooner.
            timeout=count / rate + hold + 20,
            extra_args=["-key", "caller", CALLER, "-key", "ruri", f"sip:{DIALLED}@{KAMAILIO_HOST}"],
        )
    )


async def answered_since(dsn: str, since: float) -> int:
    """Calls answered (their in-progress CDR row written) since ``since``."""
    con = await asyncpg.connect(dsn)
    try:
        count: int = await con.fetchval(
            "SELECT count(*) FROM cdr WHERE started_at >= to_timestamp($1) AND ended_by IS NULL",
            since,
        )
    finally:
        await con.close()
    return count


def dispatcher_events(log: str) -> list[str]:
    """Kamailio's lines about instances: failovers and the probes' verdicts."""
    return [
        line.split("<script>: ", 1)[-1]
        for line in log.splitlines()
        if "instance" in line and "<script>" in line
    ]


@pytest.mark.timeout(420)
async def test_dispatcher_spreads_calls_and_fails_over_when_an_instance_dies(pg_dsn: str) -> None:
    states = [state_directory(), state_directory()]
    gateways: list[GatewayProcess] = []
    try:
        async with SippUas("uas-answer", host=HOST, timeout=300) as pbx:
            for name, state in zip(("a", "b"), states, strict=True):
                gateways.append(
                    await start_instance(
                        name, state, upstream=pbx.uri, dsn=pg_dsn, edit=guard_trusts_kamailio
                    )
                )
            a, b = gateways
            async with Kamailio(
                [a.setup.target, b.setup.target], host=KAMAILIO_HOST, ping_every=PING_EVERY
            ) as kamailio:
                started = time.monotonic()
                first_task = calls(kamailio.target, CALLS_1)
                await asyncio.sleep(KILL_AFTER)
                await a.kill()
                kill_wall = time.time()
                killed_at = time.monotonic()
                await asyncio.sleep(PING_EVERY + FR_TIMER)
                second_started = time.monotonic()
                second = await calls(kamailio.target, CALLS_2)
                second_seconds = time.monotonic() - second_started
                first = await first_task
                first_seconds = time.monotonic() - started
                await asyncio.sleep(1.0)  # B's last records reach PostgreSQL
                counts = await cdr_counts(pg_dsn, kill_wall)

                # Drain B while it holds a call.
                held_at = time.time()
                held_task = calls(kamailio.target, 1, hold=DRAIN_HOLD, rate=1)
                await wait_until(
                    "the held call answered on B",
                    lambda: answered_since(pg_dsn, held_at),
                    lambda value: value >= 1,
                    DRAIN_HOLD / 2,
                )
                b.signal(signal.SIGTERM)
                await asyncio.sleep(PING_EVERY + FR_TIMER + 0.5)
                draining_alive = b.proc is not None and b.proc.returncode is None
                drained = await run_uac(
                    "uac-expect-503",
                    kamailio.target,
                    calls=5,
                    rate=5,
                    timeout=30,
                    service=DIALLED,
                )
                held = await held_task
                b_exit = await b.wait(45)
                kamailio_log = kamailio.tail(500_000)
                b_log = b.tail()
    finally:
        for gateway in gateways:
            await gateway.stop()
        for state in states:
            remove_state(state)

    a_counts, b_counts = counts.get("a", {}), counts.get("b", {})
    before = a_counts.get("before", 0) + b_counts.get("before", 0)
    events = "\n".join(dispatcher_events(kamailio_log))
    failovers = collections.Counter(
        line.replace(a.setup.target, "A").replace(b.setup.target, "B")
        for line in dispatcher_events(kamailio_log)
    )
    print("\nKamailio:", dict(failovers))
    print(
        "run 1, SIPp's errors (the log's tail):",
        dict(collections.Counter(re.findall(r"received 'SIP/2.0 [0-9]+[^\r\n']*", first.errors))),
    )
    print(
        f"\nrun 1: {CALLS_1} calls at {RATE:g}/s held {HOLD:g} s, in {first_seconds:.1f} s:"
        f" {first.successful_calls} ok, {first.failed_calls} failed,"
        f" {CALLS_1 - first.successful_calls - first.failed_calls} unfinished;"
        f" A killed {KILL_AFTER:.1f} s in"
        f"\n  calls started before the kill: A {a_counts.get('before', 0)},"
        f" B {b_counts.get('before', 0)}"
        f"\n  A's calls in flight at the kill (its CDR rows never closed):"
        f" {a_counts.get('open', 0)}"
        f"\nrun 2, from {second_started - killed_at:.1f} s after the kill: {CALLS_2} calls in"
        f" {second_seconds:.1f} s: {second.successful_calls} ok, {second.failed_calls} failed"
        f"\n  calls started after the kill: A {a_counts.get('after', 0)},"
        f" B {b_counts.get('after', 0)}"
    )
    # Calls that never completed (SIPp's -timeout ended them) count as failed.
    lost = CALLS_1 - first.successful_calls
    # Round-robin: both instances took calls, near half each, before the kill.
    assert a_counts.get("before", 0) >= before * 0.3, counts
    assert b_counts.get("before", 0) >= before * 0.3, counts
    # The calls lost are those A held when it died (answered and never ended there),
    # and at most the few it was still setting up within one fr_timer.
    assert lost <= a_counts.get("open", 0) + RATE * FR_TIMER, (
        counts,
        first.describe(),
    )
    # After the probe interval every new call succeeds, through B.
    assert second.ok, second.describe()
    assert second.successful_calls == CALLS_2
    assert a_counts.get("after", 0) == 0, counts
    # The probes took A out when it died, and B when it began to drain, while it
    # still ran and held its call; with no instance left, Kamailio answers 503.
    downs = [e for e in dispatcher_events(kamailio_log) if "instance down:" in e]
    assert any(f"sip:{a.setup.target}" in e for e in downs), events
    assert any(f"sip:{b.setup.target}" in e for e in downs), events
    assert draining_alive, held.describe() + events + b_log
    assert drained.ok, drained.describe() + kamailio_log[-3000:]
    assert held.ok, held.describe()
    assert b_exit == 0
